//! Streaming redaction in bounded memory.
//!
//! The stream is cut into fixed blocks by absolute offset (not by how the caller's chunks
//! happen to arrive). Each block is scanned together with `context` bytes on either side, and
//! a finding is decided by the block its secret starts in. Because every scan sees exactly the
//! same bytes whatever the chunking, redacting in chunks gives byte-for-byte the same output
//! as redacting the whole input, and the buffer never holds more than
//! `context + block + context` bytes.

use std::io::{self, Write};

use crate::detector::{Detector, Finding};

/// Default block size for the redactor.
pub(crate) const REDACT_BLOCK: usize = 64 * 1024;

/// A piece of the decided stream, in order.
pub(crate) enum Piece<'a> {
    /// Bytes that are not part of a secret.
    Plain(&'a [u8]),
    /// A secret (span in absolute stream offsets) and its bytes.
    Secret(&'a Finding, &'a [u8]),
}

/// Block-wise detection over a stream; the engine under [`Redactor`] and large-file scanning.
pub(crate) struct BlockStream {
    detector: Detector,
    block: usize,
    context: usize,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    buf_start: usize,
    /// Absolute start of the next block to decide.
    block_start: usize,
    /// Absolute offset up to which the stream has been handed out as pieces.
    emitted: usize,
    high_water: usize,
}

impl BlockStream {
    pub(crate) fn new(detector: &Detector, block: usize) -> Self {
        let context = detector.max_match_len() + 256;
        Self {
            detector: detector.clone(),
            block: block.max(1),
            context,
            buf: Vec::new(),
            buf_start: 0,
            block_start: 0,
            emitted: 0,
            high_water: 0,
        }
    }

    /// The most bytes the buffer can ever hold.
    pub(crate) fn bound(&self) -> usize {
        2 * self.context + self.block
    }

    pub(crate) fn push(&mut self, mut chunk: &[u8], sink: &mut dyn FnMut(Piece<'_>)) {
        loop {
            let target = self.block_start + self.block + self.context;
            let have = self.buf_start + self.buf.len();
            if have >= target {
                self.process(None, sink);
                continue;
            }
            if chunk.is_empty() {
                break;
            }
            let take = (target - have).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            self.high_water = self.high_water.max(self.buf.len());
        }
    }

    pub(crate) fn finish(&mut self, sink: &mut dyn FnMut(Piece<'_>)) {
        let end = self.buf_start + self.buf.len();
        while self.block_start < end {
            self.process(Some(end), sink);
        }
    }

    /// Decides the block at `block_start`. `stream_end` is set once the input has ended.
    fn process(&mut self, stream_end: Option<usize>, sink: &mut dyn FnMut(Piece<'_>)) {
        let nominal_end = self.block_start + self.block;
        let (win_end, block_end) = match stream_end {
            None => (nominal_end + self.context, nominal_end),
            Some(e) => ((nominal_end + self.context).min(e), nominal_end.min(e)),
        };
        let win_start = self
            .block_start
            .saturating_sub(self.context)
            .max(self.buf_start);
        let rel = |abs: usize| abs - self.buf_start;
        let hay = &self.buf[rel(win_start)..rel(win_end)];
        let findings = self.detector.detect(hay);
        for f in findings {
            let f = f.shifted(win_start);
            let start = f.span.start;
            if start < self.block_start || start >= block_end || start < self.emitted {
                continue;
            }
            sink(Piece::Plain(&self.buf[rel(self.emitted)..rel(start)]));
            sink(Piece::Secret(&f, &self.buf[rel(start)..rel(f.span.end)]));
            self.emitted = f.span.end;
        }
        if self.emitted < block_end {
            sink(Piece::Plain(&self.buf[rel(self.emitted)..rel(block_end)]));
            self.emitted = block_end;
        }
        self.block_start = block_end;
        let keep_from = self
            .block_start
            .saturating_sub(self.context)
            .min(self.emitted)
            .max(self.buf_start);
        self.buf.drain(..keep_from - self.buf_start);
        self.buf_start = keep_from;
    }
}

/// Redacts a stream chunk by chunk: each secret is replaced by what `replace` returns for it.
///
/// `replace` gets the finding (its span in absolute stream offsets) and the secret's bytes;
/// the broker seals the value and returns a placeholder. Memory is bounded by
/// [`Redactor::buffer_bound`] whatever the input size; call [`Redactor::finish`] at the end
/// of the input or the last bytes are never emitted.
pub struct Redactor<F> {
    stream: BlockStream,
    replace: F,
}

impl<F> std::fmt::Debug for Redactor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("buffered", &self.stream.buf.len())
            .field("bound", &self.stream.bound())
            .finish()
    }
}

impl<F: FnMut(&Finding, &[u8]) -> Vec<u8>> Redactor<F> {
    /// A redactor using `detector`'s rules.
    pub fn new(detector: &Detector, replace: F) -> Self {
        Self {
            stream: BlockStream::new(detector, REDACT_BLOCK),
            replace,
        }
    }

    /// Feeds the next chunk; appends whatever output is decided to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let replace = &mut self.replace;
        self.stream.push(chunk, &mut |p| emit(p, replace, out));
    }

    /// Ends the input and appends the remaining output to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let replace = &mut self.replace;
        self.stream.finish(&mut |p| emit(p, replace, out));
    }

    /// Bytes currently held back (context and undecided input).
    pub fn buffered(&self) -> usize {
        self.stream.buf.len()
    }

    /// The most bytes this redactor has ever held back.
    pub fn high_water_mark(&self) -> usize {
        self.stream.high_water
    }

    /// The most bytes this redactor can ever hold back: the block size plus twice the longest
    /// match any rule supports (and a small margin).
    pub fn buffer_bound(&self) -> usize {
        self.stream.bound()
    }
}

fn emit<F: FnMut(&Finding, &[u8]) -> Vec<u8>>(p: Piece<'_>, replace: &mut F, out: &mut Vec<u8>) {
    match p {
        Piece::Plain(b) => out.extend_from_slice(b),
        Piece::Secret(f, secret) => out.extend_from_slice(&replace(f, secret)),
    }
}

impl Detector {
    /// A streaming redactor with this detector's rules.
    pub fn redactor<F: FnMut(&Finding, &[u8]) -> Vec<u8>>(&self, replace: F) -> Redactor<F> {
        Redactor::new(self, replace)
    }

    /// Redacts a whole buffer. Gives exactly the output of a [`Redactor`] fed the same bytes
    /// in any chunks.
    pub fn redact<F: FnMut(&Finding, &[u8]) -> Vec<u8>>(
        &self,
        input: &[u8],
        replace: F,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut r = Redactor::new(self, replace);
        r.push(input, &mut out);
        r.finish(&mut out);
        out
    }
}

/// An [`io::Write`] adapter that redacts everything written through it before passing it on.
/// Call [`RedactingWriter::finish`] at the end, or the tail of the stream is lost.
pub struct RedactingWriter<W: Write, F> {
    redactor: Redactor<F>,
    inner: W,
    scratch: Vec<u8>,
}

impl<W: Write, F> std::fmt::Debug for RedactingWriter<W, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactingWriter")
            .field("redactor", &self.redactor)
            .finish()
    }
}

impl<W: Write, F: FnMut(&Finding, &[u8]) -> Vec<u8>> RedactingWriter<W, F> {
    /// Wraps `inner`.
    pub fn new(detector: &Detector, inner: W, replace: F) -> Self {
        Self {
            redactor: Redactor::new(detector, replace),
            inner,
            scratch: Vec::new(),
        }
    }

    /// Flushes the remaining redacted output and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.redactor.finish(&mut out);
        self.inner.write_all(&out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write, F: FnMut(&Finding, &[u8]) -> Vec<u8>> Write for RedactingWriter<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scratch.clear();
        self.redactor.push(buf, &mut self.scratch);
        self.inner.write_all(&self.scratch)?;
        Ok(buf.len())
    }

    /// Flushes what has been decided; bytes still needed as context stay buffered.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
