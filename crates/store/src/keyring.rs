//! The master key plus a cache of unwrapped tenant data keys.

use crate::StoreError;
use sequester_crypto::{DataKey, MasterKey};
use sequester_model::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

pub(crate) struct Keyring {
    master: MasterKey,
    data_keys: Mutex<HashMap<TenantId, Arc<DataKey>>>,
}

impl Keyring {
    pub(crate) fn new(master: MasterKey) -> Self {
        Self {
            master,
            data_keys: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The tenant's data key, unwrapping `wrapped` on first use.
    pub(crate) fn data_key(
        &self,
        tenant: &TenantId,
        wrapped: &[u8],
    ) -> Result<Arc<DataKey>, StoreError> {
        let mut cache = self
            .data_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache.get(tenant) {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(self.master.unwrap_data_key(tenant.as_str(), wrapped)?);
        cache.insert(tenant.clone(), Arc::clone(&key));
        Ok(key)
    }
}
