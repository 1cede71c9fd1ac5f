//! Reading the examples' input files.

/// The contents of the file at `path`, or `None` after saying on stderr why it could not be
/// read.
pub fn read(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path)
        .inspect_err(|e| eprintln!("{path}: {e}"))
        .ok()
}
