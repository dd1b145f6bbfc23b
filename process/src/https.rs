//! How a Rondo process serves HTTPS to the public (the gateway's API, a
//! node's streams and direct uploads), with the limits every public
//! listener needs:
//!
//! - at most [`ListenerLimits::max_connections`] connections at once; one
//!   more is closed as soon as it is accepted (before its TLS handshake);
//! - the TLS handshake within 10 s (axum-server's default);
//! - the first byte of a request within [`ListenerLimits::header_timeout`]
//!   of the handshake, and its headers within that time too (hyper);
//! - a connection with no byte read or written for
//!   [`ListenerLimits::idle_timeout`] is closed (an idle keep-alive
//!   connection, a client that stopped reading);
//! - HTTP/2 keepalive pings: a peer that stops answering is dropped;
//! - TCP_NODELAY (Nagle's algorithm would hold the last short TLS record of
//!   every answer for an acknowledgement).
//!
//! A body that stalls is the router's business (each router sets a body
//! timeout with tower-http).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of a public HTTPS listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The acceptor chain of a public listener: the connection cap, then TLS,
/// then TCP_NODELAY.
pub type PublicAcceptor = Capped<RustlsAcceptor<NoDelayAcceptor>>;

/// A server on `listener` with `tls` and `limits`, stopped through
/// `handle`. The caller serves its router on it.
pub fn server(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ListenerLimits,
    handle: axum_server::Handle,
) -> std::io::Result<axum_server::Server<PublicAcceptor>> {
    listener.set_nonblocking(true)?;
    let acceptor = Capped {
        inner: RustlsAcceptor::new(RustlsConfig::from_config(tls)).acceptor(NoDelayAcceptor::new()),
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
    };
    let mut server = axum_server::from_tcp(listener)
        .acceptor(acceptor)
        .handle(handle);
    let builder = server.http_builder();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256);
    Ok(server)
}

/// Takes a slot for each connection, and refuses one when none is free.
#[derive(Clone, Debug)]
pub struct Capped<A> {
    inner: A,
    slots: Arc<Semaphore>,
    limits: ListenerLimits,
}

impl<A, I, S> Accept<I, S> for Capped<A>
where
    A: Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let slot = self.slots.clone().try_acquire_owned();
        let inner = self.inner.clone();
        let limits = self.limits;
        Box::pin(async move {
            let Ok(slot) = slot else {
                tracing::warn!("connection limit reached: a connection was refused");
                return Err(std::io::Error::other("connection limit reached"));
            };
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((
                Counted {
                    stream,
                    _slot: slot,
                    started: false,
                    idle: limits.idle_timeout,
                    deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
                },
                service,
            ))
        })
    }
}

/// A connection holding its slot until it is dropped, and closed when it
/// sends nothing in time: the first byte within the header timeout, then
/// any traffic (either way) within the idle timeout.
#[derive(Debug)]
pub struct Counted<T> {
    stream: T,
    _slot: OwnedSemaphorePermit,
    started: bool,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Counted<T> {
    fn active(&mut self) {
        self.started = true;
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Whether the connection has been quiet past its deadline (and
    /// otherwise arranges to be woken at the deadline).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out(started: bool) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        if started {
            "connection idle too long"
        } else {
            "no request in time"
        },
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out(self.started))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 && self.started {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out(self.started))),
            other => other,
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 && self.started {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out(self.started))),
            other => other,
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
