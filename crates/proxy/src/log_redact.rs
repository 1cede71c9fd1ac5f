//! Redaction of the broker's own log lines: every line passes through the secret detector,
//! and through exact matching of every active secret value and its base64, hex and
//! URL-encoded forms (rebuilt when the snapshot reloads). A value can therefore not reach a
//! log even by a bug that formats it.

use crate::scrub::Scrubber;
use sequester_crypto::SecretValue;
use sequester_detect::Detector;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// What replaces a value found in a log line.
const MARK: &[u8] = b"[REDACTED]";

/// Shared by the log writer and the data plane.
pub struct LogRedactor {
    detector: OnceLock<Arc<Detector>>,
    exact: RwLock<Option<Scrubber>>,
}

impl Default for LogRedactor {
    fn default() -> Self {
        Self::new()
    }
}

impl LogRedactor {
    pub fn new() -> Self {
        Self {
            detector: OnceLock::new(),
            exact: RwLock::new(None),
        }
    }

    /// Uses `detector` rather than building one on the first log line.
    pub fn with_detector(detector: Arc<Detector>) -> Self {
        let r = Self::new();
        let _ = r.detector.set(detector);
        r
    }

    fn detector(&self) -> &Detector {
        self.detector.get_or_init(|| Arc::new(Detector::builtin()))
    }

    /// The detector, shared with whoever else needs one (built on first use).
    pub fn shared_detector(&self) -> Arc<Detector> {
        Arc::clone(self.detector.get_or_init(|| Arc::new(Detector::builtin())))
    }

    /// Replaces the set of exact values to look for.
    pub fn set_values(&self, values: &[SecretValue]) {
        #[expect(
            clippy::disallowed_methods,
            reason = "log redaction: the values are what must never be logged"
        )]
        let raw: Vec<&[u8]> = values.iter().map(|v| v.expose()).collect();
        let scrubber = Scrubber::new(&raw, MARK);
        *self.exact.write().unwrap_or_else(PoisonError::into_inner) = scrubber;
    }

    /// The line with every detected secret and every known value replaced.
    pub fn redact<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(line);
        if let Some(s) = self
            .exact
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            && let Some(scrubbed) = s.scrub_all(&out)
        {
            out = Cow::Owned(scrubbed);
        }
        let findings = self.detector().detect(&out);
        if findings.is_empty() {
            return out;
        }
        let mut redacted = Vec::with_capacity(out.len());
        let mut last = 0;
        for f in findings {
            if f.span.start < last || f.span.end > out.len() {
                continue;
            }
            redacted.extend_from_slice(&out[last..f.span.start]);
            redacted.extend_from_slice(b"[REDACTED ");
            redacted.extend_from_slice(f.provider().as_bytes());
            redacted.push(b']');
            last = f.span.end;
        }
        redacted.extend_from_slice(&out[last..]);
        Cow::Owned(redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_detected_secrets_are_redacted() {
        let r = LogRedactor::new();
        r.set_values(&[SecretValue::new(b"my-internal-password-123".to_vec())]);
        let line = b"user said my-internal-password-123 and bXktaW50ZXJuYWwtcGFzc3dvcmQtMTIz ok";
        let out = r.redact(line);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("my-internal-password-123"), "{text}");
        assert!(!text.contains("bXktaW50ZXJuYWwtcGFzc3dvcmQtMTIz"), "{text}");
        let pem = b"key -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDOQdYxQ6TnOHbDmGFeq27FmACpkM5WEi58jEJsN3tqZwAAAJgZXmpDGV5q\n-----END OPENSSH PRIVATE KEY----- end";
        let out = r.redact(pem);
        assert!(
            !String::from_utf8_lossy(&out).contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ")
        );
        let plain = b"an ordinary line";
        assert!(matches!(r.redact(plain), Cow::Borrowed(_)));
    }
}
