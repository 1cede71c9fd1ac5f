//! The master key file: `sequester-master-key-v1:<base64 of 32 bytes>\n`, mode 0600.

use crate::{CryptoError, MasterKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use zeroize::Zeroizing;

const HEADER: &str = "sequester-master-key-v1:";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `key` to a new file at `path` with mode 0600 and syncs it. Fails if the file exists.
pub fn create_key_file(path: &Path, key: &MasterKey) -> Result<(), CryptoError> {
    let mut text = Zeroizing::new(String::with_capacity(80));
    text.push_str(HEADER);
    text.push_str(&B64.encode(key.bytes()));
    text.push('\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// Reads the key file, refusing one that other users can read or write.
pub fn read_key_file(path: &Path) -> Result<MasterKey, CryptoError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CryptoError::KeyFileMissing {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyFileInsecure {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(256)
        .read_to_string(&mut text)
        .map_err(|_| CryptoError::KeyFileMalformed {
            path: path.to_owned(),
        })?;
    let malformed = || CryptoError::KeyFileMalformed {
        path: path.to_owned(),
    };
    let encoded = text.trim_end().strip_prefix(HEADER).ok_or_else(malformed)?;
    let decoded = Zeroizing::new(B64.decode(encoded).map_err(|_| malformed())?);
    let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| malformed())?;
    Ok(MasterKey::from_bytes(Zeroizing::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_mode_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate();
        create_key_file(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap().bytes(), key.bytes());

        // Never overwrites an existing key.
        assert!(create_key_file(&path, &MasterKey::generate()).is_err());
        assert_eq!(read_key_file(&path).unwrap().bytes(), key.bytes());

        for insecure in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(insecure)).unwrap();
            let err = read_key_file(&path).err().unwrap();
            assert_eq!(err.code(), sequester_model::ErrorCode::KeyFileInsecure);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_key_file(&path).is_ok());

        let missing = dir.path().join("nope.key");
        assert_eq!(
            read_key_file(&missing).err().unwrap().code(),
            sequester_model::ErrorCode::KeyFileMissing
        );

        let junk = dir.path().join("junk.key");
        std::fs::write(&junk, "not a key").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_key_file(&junk).err().unwrap().code(),
            sequester_model::ErrorCode::WrongMasterKey
        );
    }
}
