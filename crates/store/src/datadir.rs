//! The data directory: `sequester.db` (SQLite, WAL) and `master.key` (mode 0600, key-file
//! mode only), in a directory of mode 0700.

use crate::sqlite::{KeyMeta, SqliteStore, close_quietly, connect, read_key_meta, run_migrations};
use crate::{Store, StoreError};
use sequester_crypto::{CryptoError, KdfParams, MasterKey, create_key_file, read_key_file};
use sequester_model::{TenantName, Timestamp};
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// How the master key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// A random key in `master.key`, mode 0600.
    KeyFile,
    /// Derived with Argon2id from a passphrase given at every start; nothing on disk.
    Passphrase,
}

impl KeyMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::KeyFile => "file",
            Self::Passphrase => "passphrase",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "file" => Some(Self::KeyFile),
            "passphrase" => Some(Self::Passphrase),
            _ => None,
        }
    }
}

/// Supplies a passphrase when one is needed. The flag asks for confirmation (a new passphrase
/// typed twice). Not called in key-file mode.
pub type PassphraseSource<'a> =
    &'a (dyn Fn(bool) -> Result<Zeroizing<Vec<u8>>, StoreError> + Send + Sync);

/// Shortest accepted passphrase, in bytes.
const MIN_PASSPHRASE_LEN: usize = 12;

/// A Sequester data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

fn passphrase_key(
    passphrase: PassphraseSource<'_>,
    confirm: bool,
    params: &KdfParams,
) -> Result<MasterKey, StoreError> {
    let phrase = passphrase(confirm)?;
    if confirm && phrase.len() < MIN_PASSPHRASE_LEN {
        return Err(StoreError::InvalidValue {
            reason: "used as a passphrase is too short; use at least 12 characters",
        });
    }
    Ok(MasterKey::from_passphrase(&phrase, params)?)
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$XDG_DATA_HOME/sequester`, usually `~/.local/share/sequester`.
    pub fn default_root() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("sequester"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join("sequester.db")
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// Where `rekey` writes the new key before the database switches to it.
    fn next_key_path(&self) -> PathBuf {
        self.root.join("master.key.next")
    }

    pub fn is_initialized(&self) -> bool {
        self.database_path().exists()
    }

    /// Creates the directory, the master key (file or passphrase) and the database with its
    /// `default` tenant.
    pub async fn init(
        &self,
        mode: KeyMode,
        passphrase: PassphraseSource<'_>,
        now: Timestamp,
    ) -> Result<SqliteStore, StoreError> {
        let db = self.database_path();
        let key_path = self.key_path();
        if db.exists() || key_path.exists() {
            return Err(StoreError::AlreadyInitialized {
                path: self.root.clone(),
            });
        }
        // Derive or generate the key before anything touches the disk, so a refused
        // passphrase leaves nothing behind.
        let (master, kdf) = match mode {
            KeyMode::KeyFile => (MasterKey::generate(), None),
            KeyMode::Passphrase => {
                let params = KdfParams::generate();
                (
                    passphrase_key(passphrase, true, &params)?,
                    Some(params.encode()),
                )
            }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(io_err(&self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.root))?;
        if mode == KeyMode::KeyFile {
            create_key_file(&key_path, &master)?;
        }
        let check = master.key_check()?;
        // Create the database file owner-only; SQLite gives its WAL and shared-memory files
        // the same mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)
            .map_err(io_err(&db))?;
        let mut conn = connect(&db, false).await?;
        run_migrations(&mut conn, now).await?;
        let store = SqliteStore::new(conn, master, db.clone());
        store
            .write_initial_meta(&KeyMeta {
                mode: mode.as_str().to_owned(),
                kdf,
                check,
            })
            .await?;
        store
            .create_tenant(&TenantName::default_tenant(), now)
            .await?;
        sync_dir(&self.root)?;
        Ok(store)
    }

    /// Opens an initialised directory. The master key is verified before anything is written;
    /// a wrong or missing key fails here and leaves the directory untouched.
    pub async fn open(
        &self,
        passphrase: PassphraseSource<'_>,
        now: Timestamp,
    ) -> Result<SqliteStore, StoreError> {
        let db = self.database_path();
        if !db.exists() {
            return Err(StoreError::NotInitialized {
                path: self.root.clone(),
            });
        }
        let mut conn = connect(&db, false).await?;
        let meta = match read_key_meta(&mut conn).await? {
            Some(meta) => meta,
            None => {
                close_quietly(conn).await;
                return Err(StoreError::NotInitialized {
                    path: self.root.clone(),
                });
            }
        };
        let master = match self.load_master(&meta, passphrase) {
            Ok(master) => master,
            Err(e) => {
                close_quietly(conn).await;
                return Err(e);
            }
        };
        run_migrations(&mut conn, now).await?;
        Ok(SqliteStore::new(conn, master, db))
    }

    fn load_master(
        &self,
        meta: &KeyMeta,
        passphrase: PassphraseSource<'_>,
    ) -> Result<MasterKey, StoreError> {
        match KeyMode::parse(&meta.mode) {
            Some(KeyMode::KeyFile) => {
                let hint = "the key file belongs to another data directory or was replaced; restore the right master.key";
                let key_path = self.key_path();
                let next_path = self.next_key_path();
                let current = read_key_file(&key_path);
                match current {
                    Ok(key) => match key.verify(&meta.check, hint) {
                        Ok(()) => {
                            // A rekey that stopped before its database commit left this file;
                            // the database still uses the current key, so it is stale.
                            if next_path.exists() {
                                std::fs::remove_file(&next_path).map_err(io_err(&next_path))?;
                            }
                            Ok(key)
                        }
                        Err(wrong) => self
                            .finish_interrupted_rekey(meta, hint)
                            .ok_or(wrong.into()),
                    },
                    Err(CryptoError::KeyFileMissing { path }) => self
                        .finish_interrupted_rekey(meta, hint)
                        .ok_or(StoreError::Crypto(CryptoError::KeyFileMissing { path })),
                    Err(e) => Err(e.into()),
                }
            }
            Some(KeyMode::Passphrase) => {
                let params = meta
                    .kdf
                    .as_deref()
                    .and_then(KdfParams::decode)
                    .ok_or_else(|| StoreError::corrupt("key derivation parameters"))?;
                let key = passphrase_key(passphrase, false, &params)?;
                key.verify(&meta.check, "the passphrase is wrong")?;
                Ok(key)
            }
            None => Err(StoreError::corrupt("key mode")),
        }
    }

    /// A rekey that committed to the database but stopped before renaming
    /// `master.key.next` over `master.key`: finish it.
    fn finish_interrupted_rekey(&self, meta: &KeyMeta, hint: &'static str) -> Option<MasterKey> {
        let next_path = self.next_key_path();
        let next = read_key_file(&next_path).ok()?;
        next.verify(&meta.check, hint).ok()?;
        std::fs::rename(&next_path, self.key_path()).ok()?;
        sync_dir(&self.root).ok()?;
        tracing::warn!("completed an interrupted rekey: master.key now holds the new key");
        Some(next)
    }

    /// The key mode recorded in the database.
    pub async fn key_mode(&self) -> Result<KeyMode, StoreError> {
        let mut conn = connect(&self.database_path(), false).await?;
        let meta = read_key_meta(&mut conn).await;
        close_quietly(conn).await;
        let meta = meta?.ok_or_else(|| StoreError::NotInitialized {
            path: self.root.clone(),
        })?;
        KeyMode::parse(&meta.mode).ok_or_else(|| StoreError::corrupt("key mode"))
    }

    /// Replaces the master key and re-wraps every tenant data key, atomically. In key-file
    /// mode a new random key replaces `master.key`; in passphrase mode `new_passphrase` is
    /// asked for (with confirmation). Returns the number of re-wrapped tenant keys.
    ///
    /// Crash safety (key-file mode): the new key is written to `master.key.next` and synced,
    /// then one database transaction switches every wrapped key and the key check, then the
    /// file is renamed over `master.key`. `open` finishes a rekey interrupted between the last
    /// two steps and discards a `master.key.next` left before the commit.
    pub async fn rekey(
        &self,
        store: &SqliteStore,
        new_passphrase: PassphraseSource<'_>,
    ) -> Result<usize, StoreError> {
        match self.key_mode().await? {
            KeyMode::KeyFile => {
                let new_key = MasterKey::generate();
                let next_path = self.next_key_path();
                if next_path.exists() {
                    std::fs::remove_file(&next_path).map_err(io_err(&next_path))?;
                }
                create_key_file(&next_path, &new_key)?;
                sync_dir(&self.root)?;
                let meta = KeyMeta {
                    mode: KeyMode::KeyFile.as_str().to_owned(),
                    kdf: None,
                    check: new_key.key_check()?,
                };
                let count = store.rewrap(&new_key, &meta).await?;
                std::fs::rename(&next_path, self.key_path()).map_err(io_err(&next_path))?;
                sync_dir(&self.root)?;
                Ok(count)
            }
            KeyMode::Passphrase => {
                let params = KdfParams::generate();
                let new_key = passphrase_key(new_passphrase, true, &params)?;
                let meta = KeyMeta {
                    mode: KeyMode::Passphrase.as_str().to_owned(),
                    kdf: Some(params.encode()),
                    check: new_key.key_check()?,
                };
                store.rewrap(&new_key, &meta).await
            }
        }
    }
}
