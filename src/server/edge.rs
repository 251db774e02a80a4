//! Limits at the gRPC edge, applied before authentication and before any service decodes a
//! byte: request metadata over [`MAX_METADATA_LEN`](super::MAX_METADATA_LEN) is
//! `RESOURCE_EXHAUSTED`, a request message whose gRPC frame announces more than
//! [`MAX_MESSAGE_LEN`](super::MAX_MESSAGE_LEN) is `RESOURCE_EXHAUSTED` (read from the 5-byte
//! frame prefix, so the message is never buffered), and a body that ends inside a frame is
//! `INVALID_ARGUMENT`. [`IdleTimeout`] closes connections whose client sends nothing.
//!
//! Decoding the message itself is the codec's job (`proto::codec`); this module looks only at
//! sizes and framing. The statuses come from [`Error`]'s single mapping.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures::future::{Either, Ready, ready as ready_future};
use http_body::Frame;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tonic::{
    Status,
    body::Body,
    transport::server::{Connected, TcpConnectInfo},
};

use crate::error::Error;

/// Bytes of a gRPC frame prefix: a compression flag and a 4-byte big-endian length.
const FRAME_PREFIX_LEN: usize = 5;
/// Per-entry overhead HTTP/2 adds to a header list's size (RFC 9113 §6.5.2).
const HEADER_ENTRY_OVERHEAD: usize = 32;

/// Tower layer enforcing the metadata and message limits on every gRPC request.
#[derive(Debug, Clone, Copy)]
pub(super) struct EdgeLayer {
    max_metadata: usize,
    max_message: usize,
}

/// The service made by [`EdgeLayer`].
#[derive(Debug, Clone)]
pub(super) struct EdgeService<S> {
    inner: S,
    limits: EdgeLayer,
}

/// A connection whose reads fail with `TimedOut` once the client has sent nothing for the
/// timeout (an HTTP/2 client answers the server's keepalive pings, so a live idle client
/// keeps it alive; one that connects and stays silent does not).
#[derive(Debug)]
pub(crate) struct IdleTimeout<IO> {
    inner: IO,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl EdgeLayer {
    /// Limits of `max_metadata` bytes of metadata (as HTTP/2 counts a header list) and
    /// `max_message` bytes per request message.
    pub(super) fn new(max_metadata: usize, max_message: usize) -> Self {
        Self {
            max_metadata,
            max_message,
        }
    }
}

impl<IO> IdleTimeout<IO> {
    /// Wraps `inner`, closing it after `timeout` without a byte from the client.
    pub(crate) fn new(inner: IO, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            limits: *self,
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for EdgeService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let len = metadata_len(request.headers());
        if len > self.limits.max_metadata {
            let status = Status::from(Error::MetadataTooLarge {
                len,
                max: self.limits.max_metadata,
            });
            return Either::Right(ready_future(Ok(status.into_http())));
        }
        let max_message = self.limits.max_message;
        let request = request.map(|inner| {
            Body::new(FramedBody {
                inner,
                max_message,
                framing: Framing::Prefix { seen: 0, len: 0 },
                failed: false,
            })
        });
        Either::Left(self.inner.call(request))
    }
}

/// The size of `headers` as an HTTP/2 header list (RFC 9113 §6.5.2), without pseudo-headers.
fn metadata_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| {
            name.as_str()
                .len()
                .saturating_add(value.len())
                .saturating_add(HEADER_ENTRY_OVERHEAD)
        })
        .fold(0, usize::saturating_add)
}

/// Where a request body is in its gRPC framing.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// Reading a frame prefix: `seen` bytes of it so far, the length bytes folded into `len`.
    Prefix { seen: usize, len: u32 },
    /// Inside a message, `left` bytes to go.
    Message { left: usize },
}

/// A request body passed through unchanged, except that it fails with a status as soon as a
/// frame prefix announces a message over the limit, or the body ends inside a frame.
struct FramedBody {
    inner: Body,
    max_message: usize,
    framing: Framing,
    failed: bool,
}

impl FramedBody {
    /// Follows the framing over `data`.
    fn advance(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            match self.framing {
                Framing::Prefix { seen, len } => {
                    let Some((&byte, rest)) = data.split_first() else {
                        break;
                    };
                    data = rest;
                    // The first byte is the compression flag; tonic checks it.
                    let len = if seen == 0 {
                        0
                    } else {
                        (len << 8) | u32::from(byte)
                    };
                    if seen + 1 < FRAME_PREFIX_LEN {
                        self.framing = Framing::Prefix {
                            seen: seen + 1,
                            len,
                        };
                        continue;
                    }
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    if len > self.max_message {
                        return Err(Error::MessageTooLarge {
                            len,
                            max: self.max_message,
                        });
                    }
                    self.framing = next_frame(len);
                }
                Framing::Message { left } => {
                    let skip = left.min(data.len());
                    data = data.get(skip..).unwrap_or_default();
                    self.framing = next_frame(left - skip);
                }
            }
        }
        Ok(())
    }

    /// Bytes announced but not received, when the body ends now.
    fn missing(&self) -> usize {
        match self.framing {
            Framing::Prefix { seen: 0, .. } => 0,
            Framing::Prefix { seen, .. } => FRAME_PREFIX_LEN - seen,
            Framing::Message { left } => left,
        }
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.failed = true;
        Poll::Ready(Some(Err(Status::from(err))))
    }
}

/// The framing state after a message with `left` bytes still to come.
fn next_frame(left: usize) -> Framing {
    if left == 0 {
        Framing::Prefix { seen: 0, len: 0 }
    } else {
        Framing::Message { left }
    }
}

impl http_body::Body for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(err) = self.advance(data) {
                        return self.fail(err);
                    }
                } else if frame.is_trailers() && self.missing() > 0 {
                    let missing = self.missing();
                    return self.fail(Error::TruncatedMessage { missing });
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None if self.missing() > 0 => {
                let missing = self.missing();
                self.fail(Error::TruncatedMessage { missing })
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        // A body ending inside a frame still has its error to yield.
        self.failed || (self.inner.is_end_stream() && self.missing() == 0)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let deadline = Instant::now() + self.timeout;
                    self.deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for the idle timeout",
                )))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<IO> {
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

impl Connected for IdleTimeout<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
