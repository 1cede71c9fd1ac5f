//! Scanning files and directories: the library side of `sequester scan PATH...`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::DetectError;
use crate::detector::{Confidence, Detector, Finding};
use crate::redact::{BlockStream, Piece};

/// Files up to this size are read whole; larger ones stream through a bounded buffer.
const WHOLE_FILE_LIMIT: u64 = 8 * 1024 * 1024;
/// Block size when streaming a large file.
const STREAM_BLOCK: usize = 1024 * 1024;
/// How much of a file's start is checked for a NUL byte to call it binary (as git does).
const BINARY_PROBE: usize = 8 * 1024;

/// How to walk and scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Honour `.gitignore`, `.ignore` and git's global and per-repository excludes.
    pub respect_ignore_files: bool,
    /// Scan hidden files and directories (names starting with a dot). `.git` is always skipped.
    pub hidden: bool,
    /// Follow symbolic links.
    pub follow_links: bool,
    /// Skip files larger than this many bytes (`None`: no limit; large files stream).
    pub max_file_size: Option<u64>,
    /// Worker threads; 0 picks the number of cores.
    pub threads: usize,
    /// Keep each secret's text in the findings (for `--show-secrets`). Off by default: a
    /// report should point at a secret, not copy it.
    pub show_secrets: bool,
    /// Counters the scan advances as it goes, for a progress display.
    pub progress: Option<Arc<ScanProgress>>,
}

/// How far a scan has got, updated while it runs, for a progress display.
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Files scanned (not skipped) and their bytes.
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Files looked at in any way (scanned, skipped as binary or too large, unreadable) and
    /// the sizes of those whose size was read.
    pub visited_files: AtomicU64,
    pub visited_bytes: AtomicU64,
    /// What the whole scan will look at, once a [`count_paths`] beside it has finished (see
    /// [`ScanProgress::set_totals`]); meaningful only when `totals_known` is set.
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub totals_known: AtomicBool,
}

impl ScanProgress {
    /// Records the totals a [`count_paths`] found.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.totals_known.store(true, Ordering::Release);
    }

    /// The share of the scan done, from 0 to 1, by bytes (by files when the files are all
    /// empty), or `None` while the totals are not known. Files that grow during the scan can
    /// take it past what was counted: it stops at 1.
    pub fn fraction(&self) -> Option<f64> {
        if !self.totals_known.load(Ordering::Acquire) {
            return None;
        }
        let (done, total) = match self.total_bytes.load(Ordering::Relaxed) {
            0 => (
                self.visited_files.load(Ordering::Relaxed),
                self.total_files.load(Ordering::Relaxed),
            ),
            bytes => (self.visited_bytes.load(Ordering::Relaxed), bytes),
        };
        Some(if total == 0 {
            1.0
        } else {
            (done as f64 / total as f64).min(1.0)
        })
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            respect_ignore_files: true,
            hidden: true,
            follow_links: false,
            max_file_size: None,
            threads: 0,
            show_secrets: false,
            progress: None,
        }
    }
}

/// A finding located in a file.
#[derive(Clone, PartialEq, Eq)]
pub struct FileFinding {
    /// The file, as reached from the path given to the scan.
    pub path: PathBuf,
    /// 1-based line of the secret's first byte.
    pub line: usize,
    /// 1-based column (in Unicode code points) of the secret's first byte.
    pub column: usize,
    /// 1-based line of the secret's last byte.
    pub end_line: usize,
    /// 1-based column just past the secret's last character.
    pub end_column: usize,
    /// Byte offset of the secret's first byte in the file.
    pub start: usize,
    /// Byte offset just past the secret.
    pub end: usize,
    /// Rule id.
    pub rule: String,
    /// Rule name.
    pub rule_name: String,
    /// Provider.
    pub provider: String,
    /// Confidence.
    pub confidence: Confidence,
    /// Whether an offline validator confirmed it.
    pub validated: bool,
    /// The secret's text, only when [`ScanOptions::show_secrets`] is set.
    pub secret: Option<String>,
}

impl fmt::Debug for FileFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileFinding")
            .field("path", &self.path)
            .field("line", &self.line)
            .field("column", &self.column)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("rule", &self.rule)
            .field("provider", &self.provider)
            .field("confidence", &self.confidence)
            .field("validated", &self.validated)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// The outcome of a scan.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Findings, sorted by path then offset.
    pub findings: Vec<FileFinding>,
    /// Files scanned.
    pub files_scanned: u64,
    /// Bytes scanned.
    pub bytes_scanned: u64,
    /// Files skipped because they look binary (a NUL byte near the start).
    pub binary_files_skipped: u64,
    /// Files skipped because they exceed [`ScanOptions::max_file_size`].
    pub large_files_skipped: u64,
    /// Paths that could not be read; the scan goes on without them.
    pub errors: Vec<DetectError>,
}

/// Tracks line and column while walking forward through a file's bytes.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: usize,
    /// Code points since the start of the line.
    col: usize,
}

impl Position {
    fn new() -> Self {
        Self { line: 1, col: 0 }
    }

    fn advance(&mut self, bytes: &[u8]) {
        let newlines = memchr::memchr_iter(b'\n', bytes).count();
        let tail = match memchr::memrchr(b'\n', bytes) {
            Some(i) => {
                self.line += newlines;
                self.col = 0;
                &bytes[i + 1..]
            }
            None => bytes,
        };
        // Counting bytes that do not continue a UTF-8 sequence counts code points.
        self.col += tail.iter().filter(|&&b| (b & 0xC0) != 0x80).count();
    }
}

/// Turns findings over one file's pieces into located findings.
struct Locator<'a> {
    path: &'a Path,
    pos: Position,
    show_secrets: bool,
    out: Vec<FileFinding>,
}

impl Locator<'_> {
    fn piece(&mut self, p: Piece<'_>) {
        match p {
            Piece::Plain(b) => self.pos.advance(b),
            Piece::Secret(f, secret) => {
                let start = self.pos;
                self.pos.advance(secret);
                self.out.push(located(
                    self.path,
                    f,
                    secret,
                    start,
                    self.pos,
                    self.show_secrets,
                ));
            }
        }
    }
}

fn located(
    path: &Path,
    f: &Finding,
    secret: &[u8],
    start: Position,
    end: Position,
    show: bool,
) -> FileFinding {
    FileFinding {
        path: path.to_owned(),
        line: start.line,
        column: start.col + 1,
        end_line: end.line,
        end_column: end.col + 1,
        start: f.span.start,
        end: f.span.end,
        rule: f.rule_id().to_owned(),
        rule_name: f.rule_name().to_owned(),
        provider: f.provider().to_owned(),
        confidence: f.confidence,
        validated: f.validated(),
        secret: show.then(|| String::from_utf8_lossy(secret).into_owned()),
    }
}

/// Whether `bytes` (the start of a file) look binary: a NUL byte in the first 8 KiB.
pub fn looks_binary(bytes: &[u8]) -> bool {
    memchr::memchr(0, &bytes[..bytes.len().min(BINARY_PROBE)]).is_some()
}

/// Scans one in-memory file. `path` is only used to label the findings.
pub fn scan_bytes(
    detector: &Detector,
    path: &Path,
    bytes: &[u8],
    show_secrets: bool,
) -> Vec<FileFinding> {
    let mut loc = Locator {
        path,
        pos: Position::new(),
        show_secrets,
        out: Vec::new(),
    };
    let mut at = 0;
    for f in detector.detect(bytes) {
        let (Some(before), Some(secret)) = (bytes.get(at..f.span.start), bytes.get(f.span.clone()))
        else {
            continue;
        };
        loc.piece(Piece::Plain(before));
        loc.piece(Piece::Secret(&f, secret));
        at = f.span.end;
    }
    loc.out
}

/// Scans a reader of any size in bounded memory (stdin, a pipe, a huge file). Binary input
/// is not detected here; see [`looks_binary`].
pub fn scan_reader(
    detector: &Detector,
    path: &Path,
    mut reader: impl Read,
    show_secrets: bool,
) -> io::Result<(Vec<FileFinding>, u64)> {
    let mut stream = BlockStream::new(detector, STREAM_BLOCK);
    let mut loc = Locator {
        path,
        pos: Position::new(),
        show_secrets,
        out: Vec::new(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        stream.push(&buf[..n], &mut |p| loc.piece(p));
    }
    stream.finish(&mut |p| loc.piece(p));
    Ok((loc.out, total))
}

enum FileOutcome {
    Scanned(Vec<FileFinding>, u64),
    Binary,
    TooLarge,
}

/// A file's outcome and its size when it was opened.
fn scan_file(
    detector: &Detector,
    path: &Path,
    options: &ScanOptions,
) -> io::Result<(FileOutcome, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let outcome = scan_open_file(detector, path, options, file, len)?;
    Ok((outcome, len))
}

fn scan_open_file(
    detector: &Detector,
    path: &Path,
    options: &ScanOptions,
    mut file: File,
    len: u64,
) -> io::Result<FileOutcome> {
    if options.max_file_size.is_some_and(|max| len > max) {
        return Ok(FileOutcome::TooLarge);
    }
    if len <= WHOLE_FILE_LIMIT {
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        if looks_binary(&bytes) {
            return Ok(FileOutcome::Binary);
        }
        let findings = scan_bytes(detector, path, &bytes, options.show_secrets);
        return Ok(FileOutcome::Scanned(findings, bytes.len() as u64));
    }
    let mut probe = vec![0u8; BINARY_PROBE];
    let mut filled = 0;
    while filled < probe.len() {
        match file.read(&mut probe[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    probe.truncate(filled);
    if looks_binary(&probe) {
        return Ok(FileOutcome::Binary);
    }
    let reader = io::Cursor::new(probe).chain(file);
    let (findings, total) = scan_reader(detector, path, reader, options.show_secrets)?;
    Ok(FileOutcome::Scanned(findings, total))
}

/// Walks `paths` (files or directories) in parallel, honouring ignore files, skipping binary
/// files, and scans every file. Unreadable paths are reported in [`ScanReport::errors`].
/// The walker of `paths` as `options` say (`None` without paths): ignore files, hidden files,
/// links, threads; `.git` is never entered.
fn walker<P: AsRef<Path>>(paths: &[P], options: &ScanOptions) -> Option<ignore::WalkBuilder> {
    let (first, rest) = paths.split_first()?;
    let mut builder = ignore::WalkBuilder::new(first);
    for p in rest {
        builder.add(p);
    }
    builder
        .hidden(!options.hidden)
        .follow_links(options.follow_links)
        .git_ignore(options.respect_ignore_files)
        .git_global(options.respect_ignore_files)
        .git_exclude(options.respect_ignore_files)
        .ignore(options.respect_ignore_files)
        .parents(options.respect_ignore_files)
        .require_git(false)
        .threads(options.threads)
        .filter_entry(|e| e.file_name() != ".git");
    Some(builder)
}

/// The files a [`scan_paths`] with the same paths and options would look at, and their total
/// size, without reading them: for a progress display's totals. Entries that cannot be read
/// are not counted. Stops early, returning `None`, once `stop` is set.
pub fn count_paths<P: AsRef<Path>>(
    paths: &[P],
    options: &ScanOptions,
    stop: &AtomicBool,
) -> Option<(u64, u64)> {
    let Some(builder) = walker(paths, options) else {
        return Some((0, 0));
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in builder.build() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        files += 1;
        bytes += entry.metadata().map_or(0, |m| m.len());
    }
    Some((files, bytes))
}

pub fn scan_paths<P: AsRef<Path>>(
    detector: &Detector,
    paths: &[P],
    options: &ScanOptions,
) -> ScanReport {
    let report = Mutex::new(ScanReport::default());
    let Some(builder) = walker(paths, options) else {
        return ScanReport::default();
    };
    builder.build_parallel().run(|| {
        let report = &report;
        Box::new(move |entry| {
            let record_error = |e: DetectError| {
                if let Ok(mut r) = report.lock() {
                    r.errors.push(e);
                }
            };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = match &e {
                        ignore::Error::WithPath { path, .. } => path.clone(),
                        _ => PathBuf::new(),
                    };
                    record_error(DetectError::Io {
                        path,
                        source: io::Error::other(e.to_string()),
                    });
                    return ignore::WalkState::Continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let path = entry.path();
            let result = scan_file(detector, path, options);
            if let Some(p) = &options.progress {
                p.visited_files.fetch_add(1, Ordering::Relaxed);
                if let Ok((_, len)) = &result {
                    p.visited_bytes.fetch_add(*len, Ordering::Relaxed);
                }
            }
            match result {
                Ok((outcome, _)) => {
                    if let Ok(mut r) = report.lock() {
                        match outcome {
                            FileOutcome::Scanned(findings, bytes) => {
                                r.files_scanned += 1;
                                r.bytes_scanned += bytes;
                                if let Some(p) = &options.progress {
                                    p.files.fetch_add(1, Ordering::Relaxed);
                                    p.bytes.fetch_add(bytes, Ordering::Relaxed);
                                }
                                r.findings.extend(findings);
                            }
                            FileOutcome::Binary => r.binary_files_skipped += 1,
                            FileOutcome::TooLarge => r.large_files_skipped += 1,
                        }
                    }
                }
                Err(source) => record_error(DetectError::Io {
                    path: path.to_owned(),
                    source,
                }),
            }
            ignore::WalkState::Continue
        })
    });
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report
        .findings
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.start.cmp(&b.start)));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_code_points() {
        let mut p = Position::new();
        p.advance("ab\ncé".as_bytes());
        assert_eq!((p.line, p.col), (2, 2));
        p.advance(b"\n\nxyz");
        assert_eq!((p.line, p.col), (4, 3));
    }
}
