use crate::{Decision, Receipt};
use sequester_crypto::chain_hash;
use sequester_store::{ReceiptRow, Store, StoreError};

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub head_seq: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("receipt chain broken at record {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PAGE: u32 = 4096;

fn check_columns(row: &ReceiptRow) -> Result<(), String> {
    let body: Receipt = serde_json::from_str(&row.receipt.body)
        .map_err(|e| format!("body is not a receipt ({e})"))?;
    let r = &row.receipt;
    let same = body.tenant_id == r.tenant_id.as_str()
        && body.at_ms == r.at_ms
        && body.kind.as_str() == r.kind
        && body.request_id == r.request_id
        && body.agent == r.agent
        && body.secret == r.secret
        && (body.decision == Decision::Deny) == r.denied;
    if same {
        Ok(())
    } else {
        Err("its columns disagree with its hashed body".to_owned())
    }
}

/// Walks the whole chain: each record links to its predecessor's hash, each hash covers its
/// body, each row's columns agree with its body, sequence numbers have no gaps, and the last
/// record matches the recorded head (so a removed tail is caught too).
pub async fn verify(store: &dyn Store) -> Result<VerifyReport, VerifyError> {
    let mut prev = [0u8; 32];
    let mut expected_seq = 1;
    let mut records = 0u64;
    loop {
        let page = store.receipt_chain(expected_seq - 1, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            let broken = |reason: &str| VerifyError::Broken {
                seq: row.seq,
                reason: reason.to_owned(),
            };
            if row.seq != expected_seq {
                return Err(VerifyError::Broken {
                    seq: expected_seq,
                    reason: format!("record missing (next present is {})", row.seq),
                });
            }
            if row.prev_hash != prev {
                return Err(broken(
                    "it does not link to the previous record (removed or reordered)",
                ));
            }
            let hash = chain_hash(&prev, row.receipt.body.as_bytes());
            if row.hash != hash {
                return Err(broken("its hash does not match its contents (edited)"));
            }
            check_columns(row).map_err(|reason| broken(&reason))?;
            prev = hash;
            expected_seq += 1;
            records += 1;
        }
    }
    let last = expected_seq - 1;
    match store.receipt_head().await? {
        None if records == 0 => Ok(VerifyReport {
            records,
            head_seq: 0,
        }),
        None => Err(VerifyError::Broken {
            seq: last,
            reason: "the recorded chain head is missing".to_owned(),
        }),
        Some((seq, hash)) if seq == last && hash == prev => Ok(VerifyReport {
            records,
            head_seq: seq,
        }),
        Some((seq, _)) => Err(VerifyError::Broken {
            seq: last,
            reason: format!(
                "the chain ends at {last} but the recorded head is {seq} (records removed from the end)"
            ),
        }),
    }
}
