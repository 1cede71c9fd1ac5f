//! Reading secret values and passphrases: from standard input or a hidden prompt, never from
//! arguments or the environment, into zeroizing buffers.

use crate::failure::Failure;
use sequester_crypto::SecretValue;
use sequester_model::ErrorCode;
use sequester_store::{MAX_VALUE_LEN, StoreError};
use std::io::{IsTerminal as _, Read as _};
use std::path::Path;
use zeroize::Zeroizing;

/// Removes one trailing line ending, as `echo` and editors add one.
fn strip_newline(buf: &mut Zeroizing<Vec<u8>>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

/// Reads at most `limit` bytes from `reader` into a buffer allocated once, so that no
/// reallocation leaves an unzeroized copy behind. Returns `None` if there was more.
fn read_bounded(
    reader: impl std::io::Read,
    limit: usize,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
    let cap = buf.capacity();
    let limit_u64 = u64::try_from(limit + 1).unwrap_or(u64::MAX);
    reader.take(limit_u64).read_to_end(&mut buf)?;
    debug_assert_eq!(buf.capacity(), cap);
    if buf.len() > limit {
        return Ok(None);
    }
    Ok(Some(buf))
}

/// Reads a secret value: a hidden prompt on a terminal, otherwise all of standard input
/// (one trailing newline removed).
pub fn read_value(secret_name: &str) -> Result<SecretValue, Failure> {
    let stdin = std::io::stdin();
    let mut buf = if stdin.is_terminal() {
        let typed =
            rpassword::prompt_password(format!("Value for secret {secret_name} (hidden): "))
                .map_err(|e| {
                    Failure::new(ErrorCode::Io, format!("cannot read from the terminal: {e}"))
                })?;
        Zeroizing::new(typed.into_bytes())
    } else {
        // Two extra bytes leave room for a trailing CRLF on a value of the maximum length.
        read_bounded(stdin.lock(), MAX_VALUE_LEN + 2)
            .map_err(|e| Failure::new(ErrorCode::Io, format!("cannot read standard input: {e}")))?
            .ok_or_else(|| Failure::from(StoreError::ValueTooLarge { max: MAX_VALUE_LEN }))?
    };
    strip_newline(&mut buf);
    Ok(SecretValue::from_zeroizing(buf))
}

/// Reads the passphrase from `file` if given, else from a hidden prompt (twice when
/// `confirm`). Without either, the passphrase is required.
pub fn read_passphrase(
    file: Option<&Path>,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    if let Some(path) = file {
        let f = std::fs::File::open(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut buf = read_bounded(f, 4096)
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?
            .ok_or(StoreError::InvalidValue {
                reason: "used as a passphrase is longer than 4096 bytes",
            })?;
        strip_newline(&mut buf);
        return Ok(buf);
    }
    if !std::io::stdin().is_terminal() {
        return Err(StoreError::PassphraseRequired);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Passphrase (hidden): ")
            .map_err(|_| StoreError::PassphraseRequired)?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .map_err(|_| StoreError::PassphraseRequired)?,
        );
        if *first != *second {
            return Err(StoreError::InvalidValue {
                reason: "used as a passphrase was not typed the same twice",
            });
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_and_newline_stripping() {
        let mut buf = read_bounded(&b"sk-abc\r\n"[..], 16).unwrap().unwrap();
        strip_newline(&mut buf);
        assert_eq!(buf.as_slice(), b"sk-abc");
        let mut buf = read_bounded(&b"a\n\n"[..], 16).unwrap().unwrap();
        strip_newline(&mut buf);
        assert_eq!(buf.as_slice(), b"a\n", "only one newline is removed");
        assert!(read_bounded(&b"0123456789"[..], 9).unwrap().is_none());
        assert_eq!(
            read_bounded(&b"012345678"[..], 9).unwrap().unwrap().len(),
            9
        );
    }
}
