//! Secret detection: finds credentials in text, redacts them from streams, scans files.
//!
//! Sequester uses this crate to keep credentials out of agents' hands: the broker redacts
//! secrets from what agents send and receive and from logs, and `sequester scan` points at
//! credentials lying in a repository. The crate is a pure library: no async runtime, no
//! network, no Sequester crate but `sequester-model`.
//!
//! How a scan works (the design of Nosey Parker, Kingfisher and gitleaks):
//! 1. **Rules are data.** `rules/*.toml` hold every rule with its regex, the literal keywords
//!    one of which every match contains, optional validator, entropy and character-class
//!    thresholds, the hosts the credential may legitimately be sent to, and positive and
//!    negative examples that the tests run. They are compiled into the binary and parsed once;
//!    a rule's matcher is built the first time one of its keywords is seen (a detector starts
//!    in milliseconds, not the ~80 ms building all of them took). Users add their own rules
//!    with [`Detector::with_extra_rules`]; those are built and checked when loaded (a pattern
//!    that can match without any of its keywords is refused).
//! 2. **Prefilter.** Every occurrence of every keyword (ASCII case-insensitive, at least 3
//!    bytes) is found in one pass that hashes each position's case-folded first three bytes
//!    into a 64 KiB table (whose entry must also admit the class of the fourth byte), 8
//!    positions per step, and checks only the rare positions whose entry is set exactly (faster than an Aho-Corasick automaton over a few hundred
//!    case-insensitive keywords); text without keywords costs that one pass.
//! 3. **Regex at the hit.** A rule whose matches start with a keyword (most builtin ones) runs
//!    anchored at each hit; for the others the possible match starts are derived from the
//!    pattern where they can be (`api[_.-]?key` starts 0, 4, 7 or 8 bytes before a `key`) and
//!    tried anchored, in order, within a window around the hits bounded by the rule's longest
//!    match; otherwise the window is searched. Before a regex runs at a position, a small DFA
//!    of a relaxed copy of the pattern (look-arounds dropped, long counted repetitions made
//!    unbounded: a superset of the rule's matches) must accept there; it rejects most hits
//!    within a few bytes (`password_hash(`). Patterns that could match unboundedly long text
//!    are rejected at load time.
//! 4. **Checks.** Offline validators ([`Validator`]: GitHub/npm/Sequester CRC32 checksums, JWT
//!    header, PEM body, AWS key id, …), Shannon entropy and character classes, stop-lists of
//!    examples and templates (`EXAMPLE`, `xxxx`, `${VAR}`, `{{ var }}`, runs), look-alikes
//!    (UUIDs, lock-file digests, paths) and identifiers that name no credential (`public_key`).
//!    A run (`111111`) drops only generic matches: in a distinctive provider format it lowers
//!    the finding to [`Confidence::Low`], which is still reported and redacted.
//! 5. **Overlaps.** Of overlapping candidates the validated, most confident, most specific one
//!    wins; findings never overlap.
//!
//! Invariants:
//! - A [`Finding`] is a span into the input plus rule metadata. The secret's bytes are handed
//!   out only where a caller asks for them: the redactor's replacement closure, and
//!   [`FileFinding::secret`] when a scan runs with [`ScanOptions::show_secrets`].
//! - Sequester placeholders (`<<SECRET_` + 12 characters + `>>`) are never reported; Sequester
//!   tokens (`sqt_…`) are, with provider `sequester`.
//! - Redacting in chunks gives exactly the output of redacting the whole input, in memory
//!   bounded by [`Redactor::buffer_bound`], for inputs of any size.
//! - No input can make the crate panic (fuzzed and property-tested); errors carry stable codes
//!   ([`DetectError::code`]).
//!
//! Never: log, print, store or put in an error or a `Debug` output anything a scan finds;
//! make a network call (validation is offline only); depend on an async runtime.
//!
//! Entry points: [`Detector::builtin`] (then [`Detector::detect`], [`Detector::redact`],
//! [`Detector::redactor`]), [`scan_paths`] with [`write_json_lines`], [`write_sarif`] or
//! [`write_table`] for `sequester scan`.

#![forbid(unsafe_code)]

mod coverage;
mod detector;
mod entropy;
mod error;
mod prefilter;
mod redact;
mod report;
mod rules;
mod scan;
mod stoplist;
mod validate;

pub use detector::{Confidence, Detector, DetectorOptions, Finding, Validation};
pub use error::DetectError;
pub use redact::{RedactingWriter, Redactor};
pub use report::{write_json_lines, write_sarif, write_table};
pub use rules::{Filters, MAX_MATCH_LEN, Rule};
pub use scan::{
    FileFinding, ScanOptions, ScanProgress, ScanReport, count_paths, looks_binary, scan_bytes,
    scan_paths, scan_reader,
};
pub use stoplist::is_sequester_placeholder;
pub use validate::{Validator, base62_checksum};

/// The builtin rule files, by file name, as compiled into the binary.
pub fn builtin_rule_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    rules::BUILTIN_RULE_FILES.iter().copied()
}
