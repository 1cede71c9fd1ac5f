//! A guard in front of the HTTP/1 parser against request smuggling.
//!
//! hyper resolves a request that carries both `Content-Length` and `Transfer-Encoding` the
//! way RFC 9112 §6.3 allows (the transfer coding wins, the connection closes afterwards), so
//! the gateway never desynchronises. But such a request is an attack signature, and Sequester
//! refuses it outright: this wrapper follows the byte stream request by request (head, then
//! body by `Content-Length` or chunked framing), and when a head carries both fields it adds
//! the marker header [`CONFLICT_HEADER`], on which the gateway answers 400 without contacting
//! any upstream. Anything it does not understand (HTTP/2, upgrades, malformed heads) it passes
//! through untouched and stops inspecting; hyper then applies its own checks.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Added to a request head that carries both `Content-Length` and `Transfer-Encoding`.
pub const CONFLICT_HEADER: &str = "x-sequester-framing-conflict";

/// Heads longer than this are passed to hyper as they are (it answers 431).
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Inside chunk data, with this many bytes left, then CRLF.
    Data(u64),
    /// The CRLF after chunk data: bytes still to skip.
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one.
    Trailers(Vec<u8>),
}

#[derive(Debug)]
enum Mode {
    Head(Vec<u8>),
    Body(u64),
    Chunked(Chunk),
    Passthrough,
}

/// The state machine, separate from I/O so it can be tested byte by byte.
#[derive(Debug)]
pub(crate) struct Tracker {
    mode: Mode,
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    Unknown,
}

fn inspect_head(head: &[u8]) -> Option<(bool, Framing)> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    if req.method == Some("CONNECT") {
        return Some((false, Framing::Unknown));
    }
    let mut cl: Option<u64> = None;
    let mut cl_seen = false;
    let mut te: Option<Vec<u8>> = None;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl_seen = true;
            cl = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value.to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let conflict = cl_seen && te.is_some();
    let framing = if conflict || upgrade {
        Framing::Unknown
    } else if let Some(te) = te {
        if te.trim_ascii().ends_with(b"chunked") {
            Framing::Chunked
        } else {
            Framing::Unknown
        }
    } else if cl_seen {
        cl.map_or(Framing::Unknown, Framing::Length)
    } else {
        Framing::None
    };
    Some((conflict, framing))
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Self {
            mode: Mode::Head(Vec::new()),
        }
    }

    /// Consumes `input`, appending what may be released to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut VecDeque<u8>) {
        while !input.is_empty() {
            match &mut self.mode {
                Mode::Passthrough => {
                    out.extend(input);
                    return;
                }
                Mode::Body(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend(&input[..n]);
                    input = &input[n..];
                    *left -= u64::try_from(n).unwrap_or(0);
                    if *left == 0 {
                        self.mode = Mode::Head(Vec::new());
                    }
                }
                Mode::Head(buf) => {
                    // Blank lines before a request are allowed (RFC 9112 §2.2).
                    if buf.is_empty() {
                        let skip = input
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        out.extend(&input[..skip]);
                        input = &input[skip..];
                        if input.is_empty() {
                            return;
                        }
                    }
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(input);
                    input = &[];
                    if buf.starts_with(b"PRI * HTTP/2.0") {
                        out.extend(buf.iter());
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    let Some(end) = buf[start..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|p| start + p + 4)
                    else {
                        if buf.len() > MAX_HEAD {
                            out.extend(buf.iter());
                            self.mode = Mode::Passthrough;
                        }
                        continue;
                    };
                    let head = std::mem::take(buf);
                    let (head, rest) = head.split_at(end);
                    match inspect_head(head) {
                        None => {
                            out.extend(head);
                            self.mode = Mode::Passthrough;
                        }
                        Some((conflict, framing)) => {
                            if conflict {
                                out.extend(&head[..head.len() - 2]);
                                out.extend(CONFLICT_HEADER.as_bytes());
                                out.extend(b": 1\r\n\r\n");
                            } else {
                                out.extend(head);
                            }
                            self.mode = match framing {
                                Framing::None | Framing::Length(0) => Mode::Head(Vec::new()),
                                Framing::Length(n) => Mode::Body(n),
                                Framing::Chunked => Mode::Chunked(Chunk::Size(Vec::new())),
                                Framing::Unknown => Mode::Passthrough,
                            };
                        }
                    }
                    let rest = rest.to_vec();
                    self.feed(&rest, out);
                    return;
                }
                Mode::Chunked(chunk) => match chunk {
                    Chunk::Size(line) => {
                        let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                            line.extend_from_slice(input);
                            out.extend(input);
                            if line.len() > 4096 {
                                self.mode = Mode::Passthrough;
                            }
                            return;
                        };
                        line.extend_from_slice(&input[..=nl]);
                        out.extend(&input[..=nl]);
                        input = &input[nl + 1..];
                        let text = String::from_utf8_lossy(line);
                        let size = text
                            .trim_end()
                            .split(';')
                            .next()
                            .map(str::trim)
                            .and_then(|h| u64::from_str_radix(h, 16).ok());
                        *chunk = match size {
                            Some(0) => Chunk::Trailers(Vec::new()),
                            Some(n) => Chunk::Data(n),
                            None => {
                                self.mode = Mode::Passthrough;
                                continue;
                            }
                        };
                    }
                    Chunk::Data(left) => {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(input.len());
                        out.extend(&input[..n]);
                        input = &input[n..];
                        *left -= u64::try_from(n).unwrap_or(0);
                        if *left == 0 {
                            *chunk = Chunk::DataEnd(2);
                        }
                    }
                    Chunk::DataEnd(left) => {
                        let n = usize::from(*left).min(input.len());
                        out.extend(&input[..n]);
                        input = &input[n..];
                        *left -= u8::try_from(n).unwrap_or(0);
                        if *left == 0 {
                            *chunk = Chunk::Size(Vec::new());
                        }
                    }
                    Chunk::Trailers(line) => {
                        let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                            line.extend_from_slice(input);
                            out.extend(input);
                            if line.len() > MAX_HEAD {
                                self.mode = Mode::Passthrough;
                            }
                            return;
                        };
                        line.extend_from_slice(&input[..=nl]);
                        out.extend(&input[..=nl]);
                        input = &input[nl + 1..];
                        if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" {
                            self.mode = Mode::Head(Vec::new());
                        } else {
                            line.clear();
                        }
                    }
                },
            }
        }
    }

    /// Bytes of an unfinished head still held back.
    fn held(&self) -> Option<&[u8]> {
        match &self.mode {
            Mode::Head(buf) if !buf.is_empty() => Some(buf),
            _ => None,
        }
    }
}

/// The connection, read through a [`Tracker`].
pub struct FramingGuard<S> {
    inner: S,
    tracker: Tracker,
    out: VecDeque<u8>,
    eof: bool,
    /// Where the socket is read into before the tracker sees the bytes: allocated (and zeroed)
    /// at the first read and reused, because zeroing a fresh buffer at every read cost more
    /// than everything else the guard does (hyper polls several times per request, and a
    /// poll that finds nothing to read zeroed it too).
    scratch: Vec<u8>,
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl<S> FramingGuard<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            tracker: Tracker::new(),
            out: VecDeque::new(),
            eof: false,
            scratch: Vec::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = buf.remaining().min(this.out.len());
                let (a, b) = this.out.as_slices();
                let from_a = n.min(a.len());
                buf.put_slice(&a[..from_a]);
                buf.put_slice(&b[..n - from_a]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A head cut off by the end of the stream goes to hyper, which rejects it.
                if let Some(held) = this.tracker.held() {
                    let held = held.to_vec();
                    this.tracker = Tracker {
                        mode: Mode::Passthrough,
                    };
                    this.out.extend(held);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if this.scratch.is_empty() {
                this.scratch.resize(READ_CHUNK, 0);
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        this.eof = true;
                    } else {
                        this.tracker.feed(filled, &mut this.out);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut t = Tracker::new();
        let mut out = VecDeque::new();
        let mut last = 0;
        for &c in cuts.iter().filter(|c| **c <= input.len()) {
            if c >= last {
                t.feed(&input[last..c], &mut out);
                last = c;
            }
        }
        t.feed(&input[last..], &mut out);
        out.into_iter().collect()
    }

    const PIPELINE: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn marks_only_the_conflicting_request() {
        let out = run(PIPELINE, &[]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(CONFLICT_HEADER).count(), 1, "{text}");
        let marked = text.find(CONFLICT_HEADER).unwrap();
        assert!(marked > text.find("GET /d").unwrap());
        // Everything else is unchanged.
        assert_eq!(
            text.replace("x-sequester-framing-conflict: 1\r\n", ""),
            String::from_utf8_lossy(PIPELINE)
        );
    }

    #[test]
    fn body_text_that_looks_like_a_head_is_not_inspected() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let out = run(req, &[]);
        assert!(!String::from_utf8_lossy(&out).contains(CONFLICT_HEADER));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_stream(cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(run(PIPELINE, &cuts), run(PIPELINE, &[]));
        }

        /// Whatever arrives, the released bytes plus what is still held back are exactly the
        /// input once the marker lines are taken out: nothing is lost, reordered or invented.
        #[test]
        fn never_loses_or_invents_bytes(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), any::<u8>()], 0..300),
            heads in proptest::collection::vec(0usize..3, 0..4),
        ) {
            let mut stream = Vec::new();
            for h in heads {
                stream.extend_from_slice([
                    b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
                    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".as_slice(),
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".as_slice(),
                ][h]);
            }
            stream.extend_from_slice(&input);
            let mut t = Tracker::new();
            let mut out = VecDeque::new();
            t.feed(&stream, &mut out);
            let mut all: Vec<u8> = out.into_iter().collect();
            all.extend_from_slice(t.held().unwrap_or_default());
            let marker = format!("{CONFLICT_HEADER}: 1\r\n");
            let cleaned = String::from_utf8_lossy(&all).replace(&marker, "");
            prop_assert_eq!(cleaned, String::from_utf8_lossy(&stream).into_owned());
        }
    }
}
