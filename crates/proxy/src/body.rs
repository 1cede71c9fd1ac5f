//! Body types: everything the data plane sends is a [`ProxyBody`]; upstream responses stream
//! through [`ScrubBody`], which scrubs, counts, enforces the idle timeout and reports the
//! outcome once when the body ends, fails or is dropped.

use crate::scrub::Scrubber;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Wraps a request body so that the bytes read from it are counted in `counter`.
pub fn counted<B>(body: B, counter: Arc<AtomicU64>) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.fetch_add(
                u64::try_from(data.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        frame
    })
    .map_err(Into::into)
    .boxed()
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    UpstreamError,
    IdleTimeout,
    ClientGone,
}

/// Called once with how the body ended, how many bytes went to the client and how many
/// occurrences of a value were scrubbed out.
pub type OnEnd = Box<dyn FnOnce(End, u64, u64) + Send + Sync>;

/// An upstream response body on its way to the agent.
pub struct ScrubBody<B> {
    inner: Pin<Box<B>>,
    scrubber: Option<Scrubber>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    sent: u64,
    ended: bool,
    held_trailers: Option<http::HeaderMap>,
    on_end: Option<OnEnd>,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct IdleTimeout(Duration);

impl<B> ScrubBody<B> {
    pub fn new(inner: B, scrubber: Option<Scrubber>, idle: Duration, on_end: OnEnd) -> Self {
        Self {
            inner: Box::pin(inner),
            scrubber,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            sent: 0,
            ended: false,
            held_trailers: None,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, how: End) {
        self.ended = true;
        if let Some(f) = self.on_end.take() {
            f(
                how,
                self.sent,
                self.scrubber.as_ref().map_or(0, Scrubber::replaced),
            );
        }
    }

    fn emit(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.sent += u64::try_from(data.len()).unwrap_or(u64::MAX);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl<B> Drop for ScrubBody<B> {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(
                End::ClientGone,
                self.sent,
                self.scrubber.as_ref().map_or(0, Scrubber::replaced),
            );
        }
    }
}

impl<B> Body for ScrubBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(this.held_trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                    match frame.into_data() {
                        Ok(data) => {
                            let out = match &mut this.scrubber {
                                Some(s) => s.push(data),
                                None => data,
                            };
                            if out.is_empty() {
                                continue;
                            }
                            return this.emit(out);
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                let tail = this
                                    .scrubber
                                    .as_mut()
                                    .map(Scrubber::finish)
                                    .unwrap_or_default();
                                this.held_trailers = Some(trailers);
                                this.finish(End::Complete);
                                if !tail.is_empty() {
                                    return this.emit(tail);
                                }
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finish(End::UpstreamError);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    let tail = this
                        .scrubber
                        .as_mut()
                        .map(Scrubber::finish)
                        .unwrap_or_default();
                    if !tail.is_empty() {
                        this.sent += u64::try_from(tail.len()).unwrap_or(u64::MAX);
                        this.finish(End::Complete);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    this.finish(End::Complete);
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        let idle = this.idle;
                        this.finish(End::IdleTimeout);
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
