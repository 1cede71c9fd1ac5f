use sequester_store::NewReceipt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Written, and durable, before a value is injected.
    Intent,
    /// The outcome of a request whose intent was recorded.
    Completion,
    /// A refused request; nothing was injected or forwarded.
    Denial,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Completion => "completion",
            Self::Denial => "denial",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// Which part of the data plane handled the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Gateway,
    Proxy,
}

/// One audit record. Field order is the canonical JSON order the chain hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub kind: Kind,
    pub request_id: String,
    pub at_ms: i64,
    /// Empty when the request could not be tied to a tenant (an unknown token).
    pub tenant_id: String,
    pub agent: Option<String>,
    pub agent_id: Option<String>,
    pub token_id: Option<String>,
    pub secret: Option<String>,
    pub secret_version: Option<u32>,
    pub mode: Mode,
    pub service: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub decision: Decision,
    pub code: Option<String>,
    pub status: Option<u16>,
    pub upstream_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub run_id: Option<String>,
}

impl Receipt {
    /// The row the store appends: the canonical JSON body plus the columns used for filtering.
    pub fn to_row(&self) -> Result<NewReceipt, serde_json::Error> {
        Ok(NewReceipt {
            tenant_id: sequester_model::TenantId::from_stored(self.tenant_id.clone()),
            at_ms: self.at_ms,
            kind: self.kind.as_str().to_owned(),
            request_id: self.request_id.clone(),
            agent: self.agent.clone(),
            secret: self.secret.clone(),
            denied: self.decision == Decision::Deny,
            body: serde_json::to_string(self)?,
        })
    }
}

/// Query parameters whose values are credentials by name.
const SENSITIVE_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "auth",
    "authorization",
    "password",
    "secret",
    "client_secret",
    "sig",
    "signature",
];

/// `path?query` with the value of every credential-bearing parameter replaced by `REDACTED`:
/// parameters named like credentials, and any value holding a Sequester token.
pub fn redact_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => {
                let lower = name.to_ascii_lowercase();
                if SENSITIVE_PARAMS.contains(&lower.as_str())
                    || value.contains(sequester_crypto::TOKEN_PREFIX)
                {
                    format!("{name}=REDACTED")
                } else {
                    pair.to_owned()
                }
            }
            None if pair.contains(sequester_crypto::TOKEN_PREFIX) => "REDACTED".to_owned(),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

/// The caller's run id: `X-Run-Id` if present and printable (at most 128 characters), else
/// the trace id of a W3C `traceparent`.
pub fn run_id_from(x_run_id: Option<&[u8]>, traceparent: Option<&[u8]>) -> Option<String> {
    if let Some(v) = x_run_id {
        let ok = !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic());
        if ok {
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    let tp = std::str::from_utf8(traceparent?).ok()?;
    let mut parts = tp.trim().split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0'))
    .then(|| trace_id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_redaction() {
        assert_eq!(redact_query("/v1/x"), "/v1/x");
        assert_eq!(
            redact_query("/v1/x?key=abc&q=cats&Token=t"),
            "/v1/x?key=REDACTED&q=cats&Token=REDACTED"
        );
        assert_eq!(
            redact_query("/x?foo=sqt_abc&bar=1&sqt_naked"),
            "/x?foo=REDACTED&bar=1&REDACTED"
        );
    }

    #[test]
    fn run_ids() {
        assert_eq!(
            run_id_from(Some(b"run-42"), None).as_deref(),
            Some("run-42")
        );
        assert_eq!(run_id_from(Some(b"bad id\n"), None), None);
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            run_id_from(None, Some(tp)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(run_id_from(None, Some(b"00-0000-x-01")), None);
        assert_eq!(
            run_id_from(Some(b"mine"), Some(tp)).as_deref(),
            Some("mine"),
            "X-Run-Id wins"
        );
    }
}
