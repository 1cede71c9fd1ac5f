//! The interception CA: created once per data directory, its key sealed by the master key,
//! its certificate exported as `ca.pem` for clients to trust.

use crate::commands::Ctx;
use crate::failure::Failure;
use sequester_model::ErrorCode;
use sequester_proxy::intercept_ca::InterceptCa;
use sequester_store::{SqliteStore, Store};
use std::path::PathBuf;

/// Loads the CA (creating and storing it on first use) and writes its certificate to
/// `DATA_DIR/ca.pem`.
pub async fn ensure_ca(ctx: &Ctx, store: &SqliteStore) -> Result<(InterceptCa, PathBuf), Failure> {
    let ca = match store.interception_ca().await? {
        Some((cert, key)) => InterceptCa::from_parts(&cert, &key).map_err(|e| {
            Failure::new(
                ErrorCode::IntegrityFailure,
                format!("the stored interception CA is unusable: {e}"),
            )
        })?,
        None => {
            let ca = InterceptCa::generate("Sequester interception CA").map_err(|e| {
                Failure::new(
                    ErrorCode::Internal,
                    format!("cannot create the interception CA: {e}"),
                )
            })?;
            store
                .set_interception_ca(&ca.cert_pem(), &ca.key_der())
                .await?;
            tracing::info!(fingerprint = %ca.fingerprint(), "created the interception CA");
            ca
        }
    };
    let path = ctx.data.root().join("ca.pem");
    let pem = ca.cert_pem();
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
        std::fs::write(&path, pem).map_err(|e| {
            Failure::new(
                ErrorCode::Io,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    }
    Ok((ca, path))
}
