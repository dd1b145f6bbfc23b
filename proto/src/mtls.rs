//! The transport of every internal gRPC connection: TLS 1.3 with client
//! certificates from the cluster CA, both ways.
//!
//! A client ([`Links::lazy`], [`Links::connect`]) dials a byte
//! stream (TCP, or the simulator's), runs the TLS handshake with this
//! process's certificate and checks the server's certificate against the
//! name of whom it expects ([`Expect`]). A server ([`ClusterTls::incoming`])
//! runs the handshake on every accepted stream, concurrently and within
//! [`HANDSHAKE_TIMEOUT`], refuses clients without a certificate of the
//! cluster CA, and hands tonic a stream that carries the caller's
//! [`Identity`]; a service reads it per call with [`caller`].
//!
//! Architecture Invariant: this is the only module that opens an internal
//! connection or accepts one; nothing in the cluster speaks gRPC in clear.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rondo_core::tls::{Identity, identity_of};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};

/// Errors of loading the cluster's TLS material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cluster tls: {0}")]
    Tls(String),
}

/// A byte stream to a peer.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens a stream to `host:port`.
pub type Dial = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>>
        + Send
        + Sync,
>;

/// TCP with `TCP_NODELAY` (ring messages and answers are small).
pub fn tcp_dial() -> Dial {
    Arc::new(|addr: String| {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    })
}

/// How long a peer may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes a server runs at once; further accepted connections wait.
const MAX_HANDSHAKES: usize = 256;

/// Whom a client expects to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This node (a known member).
    Node(rondo_core::NodeId),
    /// Any node of the cluster (a probe of an address, a seed).
    AnyNode,
}

impl Expect {
    fn server_name(&self) -> String {
        match self {
            Expect::Node(id) => Identity::Node(*id).server_name(),
            Expect::AnyNode => rondo_core::tls::NODE_ROLE.to_string(),
        }
    }
}

/// This process's certificate and the cluster CA, as client and server
/// configurations (TLS 1.3 only, HTTP/2 through ALPN).
#[derive(Clone)]
pub struct ClusterTls {
    identity: Identity,
    client: tokio_rustls::TlsConnector,
    server: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// From the CA certificate, this process's certificate chain and its
    /// key (PEM). The certificate must name a node or gateway identity.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<ClusterTls, Error> {
        let tls = |m: String| Error::Tls(m);
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| tls(format!("ca certificate: {e}")))?;
            roots
                .add(ca)
                .map_err(|e| tls(format!("ca certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(tls("the ca file holds no certificate".into()));
        }
        let roots = Arc::new(roots);
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(format!("certificate: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| tls("the certificate file holds no certificate".into()))?;
        let identity = identity_of(leaf).map_err(|e| tls(e.to_string()))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(format!("private key: {e}")))?;

        let versions = &[&rustls::version::TLS13];
        let mut client = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls(format!("certificate and key: {e}")))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots)
            .build()
            .map_err(|e| tls(format!("client verifier: {e}")))?;
        let mut server = rustls::ServerConfig::builder_with_protocol_versions(versions)
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls(format!("certificate and key: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClusterTls {
            identity,
            client: tokio_rustls::TlsConnector::from(Arc::new(client)),
            server: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Reads the three PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<ClusterTls, Error> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| Error::Tls(format!("read {}: {e}", p.display())))
        };
        ClusterTls::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    /// Whom this process's certificate names.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The authenticated connections of `accepted` (a listener's streams
    /// with their remote addresses): each runs its handshake on a task of
    /// its own; a stream that fails it, or takes longer than
    /// [`HANDSHAKE_TIMEOUT`], is dropped with a log line. The listener is
    /// dropped when the returned stream is.
    pub fn incoming<S, T>(
        &self,
        accepted: S,
    ) -> impl Stream<Item = std::io::Result<Authenticated<T>>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<(T, Option<SocketAddr>)>> + Send + Unpin + 'static,
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
        let acceptor = self.server.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            let mut accepted = accepted;
            loop {
                let next = tokio::select! {
                    next = accepted.next() => next,
                    () = tx.closed() => return,
                };
                let (stream, remote) = match next {
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        // Out of file descriptors, typically: back off a
                        // little instead of spinning on the error.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    None => return,
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match handshake(&acceptor, stream, remote).await {
                        Ok(conn) => {
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(e) => {
                            tracing::info!(remote = ?remote, error = %e, "internal connection refused");
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Channels to nodes: this process's certificate over a way to dial
/// (TCP, or the simulator's streams).
#[derive(Clone)]
pub struct Links {
    tls: Arc<ClusterTls>,
    dial: Dial,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("tls", &self.tls).finish()
    }
}

impl Links {
    pub fn new(tls: Arc<ClusterTls>, dial: Dial) -> Links {
        Links { tls, dial }
    }

    /// Over TCP.
    pub fn tcp(tls: Arc<ClusterTls>) -> Links {
        Links::new(tls, tcp_dial())
    }

    pub fn tls(&self) -> &ClusterTls {
        &self.tls
    }

    /// A channel to `endpoint`, connected on first use.
    pub fn lazy(&self, endpoint: Endpoint, expect: Expect) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector(expect))
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        expect: Expect,
    ) -> Result<Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(self.connector(expect))
            .await
    }

    fn connector(
        &self,
        expect: Expect,
    ) -> impl tower::Service<
        http::Uri,
        Response = hyper_util::rt::TokioIo<Box<dyn Io>>,
        Error = std::io::Error,
        Future = Connecting,
    > + Clone
    + use<> {
        let client = self.tls.client.clone();
        let dial = self.dial.clone();
        tower::service_fn(move |uri: http::Uri| {
            let (dial, client) = (dial.clone(), client.clone());
            Box::pin(async move {
                let authority = uri
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .ok_or_else(|| std::io::Error::other("peer URL without host"))?;
                let name =
                    ServerName::try_from(expect.server_name()).map_err(std::io::Error::other)?;
                let stream = dial(authority).await?;
                let tls = client.connect(name, stream).await?;
                Ok(hyper_util::rt::TokioIo::new(Box::new(tls) as Box<dyn Io>))
            }) as Connecting
        })
    }
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<hyper_util::rt::TokioIo<Box<dyn Io>>>> + Send>>;

async fn handshake<T>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: T,
    remote: Option<SocketAddr>,
) -> std::io::Result<Authenticated<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")
        })??;
    // rustls verified the chain against the cluster CA (a client without a
    // certificate fails the handshake); the leaf names the caller.
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| std::io::Error::other("no client certificate"))?;
    let identity = identity_of(leaf).map_err(std::io::Error::other)?;
    Ok(Authenticated {
        stream: tls,
        peer: Peer { identity, remote },
    })
}

/// Who is on the other end of an accepted internal connection; tonic puts
/// it in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub identity: Identity,
    pub remote: Option<SocketAddr>,
}

/// The caller of a request that came in through [`ClusterTls::incoming`]
/// (`None` for any other request, which a service must refuse).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<Identity> {
    request.extensions().get::<Peer>().map(|p| p.identity)
}

/// An accepted connection after its handshake.
pub struct Authenticated<T> {
    stream: tokio_rustls::server::TlsStream<T>,
    peer: Peer,
}

impl<T> tonic::transport::server::Connected for Authenticated<T> {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Authenticated<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Authenticated<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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

/// A TCP listener's accepted streams, as [`ClusterTls::incoming`] takes
/// them.
pub fn tcp_accepted(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<(tokio::net::TcpStream, Option<SocketAddr>)>> + Send + Unpin
{
    Box::pin(futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.and_then(|(s, addr)| {
            s.set_nodelay(true)?;
            Ok((s, Some(addr)))
        });
        Some((next, l))
    }))
}
