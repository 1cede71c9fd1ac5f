//! Which paths to deny, and which directories must be walked to grant everything else.
//!
//! Landlock only grants. To deny a few subtrees and allow the rest, no rule may sit on a denied
//! path or on any of its ancestors (a rule on a directory covers everything beneath it). So every
//! strict ancestor of a denied path is left without a rule, and every entry of such an ancestor
//! that is neither a denied path nor another ancestor gets a full-access rule (see `rules.rs`).

use crate::ConfineError;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Canonical denied paths and their strict ancestors.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Absolute, symlink-free paths; none lies beneath another.
    pub(crate) denied: BTreeSet<PathBuf>,
    /// Every strict ancestor of a denied path, `/` included.
    pub(crate) ancestors: BTreeSet<PathBuf>,
}

impl Plan {
    pub(crate) fn new(deny: &[PathBuf]) -> Result<Self, ConfineError> {
        let mut resolved = BTreeSet::new();
        for path in deny {
            let canonical = resolve(path)?;
            if canonical.parent().is_none() {
                return Err(ConfineError::InvalidPath {
                    path: path.clone(),
                    reason: "it is the root directory, which would deny the whole file system",
                });
            }
            resolved.insert(canonical);
        }
        // A path beneath another denied path is already covered; keeping it would make the
        // outer one an "ancestor" and list the inside of a denied directory.
        let denied: BTreeSet<PathBuf> = resolved
            .iter()
            .filter(|p| !resolved.iter().any(|q| q != *p && p.starts_with(q)))
            .cloned()
            .collect();
        let ancestors = denied
            .iter()
            .flat_map(|p| p.ancestors().skip(1))
            .map(Path::to_path_buf)
            .collect();
        Ok(Self { denied, ancestors })
    }

    /// Whether `path` (a child of an ancestor) must stay without a rule.
    pub(crate) fn keeps_closed(&self, path: &Path) -> bool {
        self.denied.contains(path) || self.ancestors.contains(path)
    }
}

/// Turns a path into the absolute, symlink-free path the kernel will see.
///
/// The longest existing prefix is canonicalized (resolving `.`, `..` and symlinks); components
/// that do not exist yet are appended as they are, so a data directory created after
/// confinement is still denied. A dangling symlink, or `..` after a missing component, is
/// refused: either would make the final location depend on what is created later.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf, ConfineError> {
    let invalid = |reason| ConfineError::InvalidPath {
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(invalid("the path is empty"));
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| ConfineError::Inspect {
                path: PathBuf::from("."),
                source,
            })?
            .join(path)
    };
    let mut existing = absolute.as_path();
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut canonical) => {
                canonical.extend(missing.iter().rev());
                return Ok(canonical);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(existing).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(invalid(
                        "it goes through a symlink whose target does not exist yet; create the target first",
                    ));
                }
                match existing.components().next_back() {
                    Some(Component::Normal(name)) => missing.push(name.to_os_string()),
                    Some(Component::ParentDir) => {
                        return Err(invalid(
                            "it has `..` after a component that does not exist; give the path without `..`",
                        ));
                    }
                    _ => return Err(invalid("no part of it exists")),
                }
                existing = existing
                    .parent()
                    .ok_or_else(|| invalid("no part of it exists"))?;
            }
            Err(source) => {
                return Err(ConfineError::Inspect {
                    path: existing.to_path_buf(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        (tmp, root)
    }

    #[test]
    fn existing_paths_are_canonicalized_through_symlinks() {
        let (_tmp, root) = dir();
        std::fs::create_dir(root.join("data")).unwrap();
        symlink(root.join("data"), root.join("link")).unwrap();
        assert_eq!(resolve(&root.join("link")).unwrap(), root.join("data"));
        assert_eq!(
            resolve(&root.join("data/../data/./")).unwrap(),
            root.join("data")
        );
    }

    #[test]
    fn missing_components_are_appended_to_the_canonical_prefix() {
        let (_tmp, root) = dir();
        symlink(&root, root.join("link")).unwrap();
        assert_eq!(
            resolve(&root.join("link/not/yet")).unwrap(),
            root.join("not/yet")
        );
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let (_tmp, root) = dir();
        symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let err = resolve(&root.join("dangling/x")).unwrap_err();
        assert!(matches!(err, ConfineError::InvalidPath { .. }), "{err}");
        let err = resolve(&root.join("missing/../x")).unwrap_err();
        assert!(matches!(err, ConfineError::InvalidPath { .. }), "{err}");
        assert!(resolve(Path::new("")).is_err());
    }

    #[test]
    fn a_path_through_a_file_is_an_error() {
        let (_tmp, root) = dir();
        std::fs::write(root.join("file"), b"x").unwrap();
        let err = resolve(&root.join("file/x")).unwrap_err();
        assert!(matches!(err, ConfineError::Inspect { .. }), "{err}");
    }

    #[test]
    fn plan_drops_nested_paths_and_lists_ancestors() {
        let (_tmp, root) = dir();
        std::fs::create_dir_all(root.join("data/inner")).unwrap();
        std::fs::create_dir(root.join("keys")).unwrap();
        let plan = Plan::new(&[
            root.join("data/inner"),
            root.join("data"),
            root.join("keys/master.key"),
        ])
        .unwrap();
        assert_eq!(
            plan.denied,
            BTreeSet::from([root.join("data"), root.join("keys/master.key")])
        );
        assert!(plan.ancestors.contains(Path::new("/")));
        assert!(plan.ancestors.contains(&root));
        assert!(plan.ancestors.contains(&root.join("keys")));
        assert!(!plan.ancestors.contains(&root.join("data")));
        assert!(plan.keeps_closed(&root.join("data")));
        assert!(!plan.keeps_closed(&root.join("data2")));
    }

    #[test]
    fn denying_the_root_is_refused() {
        let err = Plan::new(&[PathBuf::from("/")]).unwrap_err();
        assert!(matches!(err, ConfineError::InvalidPath { .. }), "{err}");
    }
}
