//! The byte streams a listener hands to its sessions: plain TCP, or TLS over TCP (RTMPS).
//!
//! The RTMP listener and adapters are generic over [`Transport`], so RTMPS runs the very same
//! accept, admission, negotiation, ingest and viewer code as RTMP; only the accept step adds a
//! TLS handshake. Besides reading and writing, a session needs two things a generic
//! `AsyncRead` does not give:
//! - readiness without a read in flight (the RTMP viewer waits for input inside a `select!` and
//!   reads only after it, so no future holding a half-written message is ever dropped), and
//! - the TCP socket itself, for socket options such as `SO_SNDBUF`.
//!
//! Invariant for writers: after `write_all`, call `flush` ([`send`] does both). Over TLS a write
//! can leave encrypted bytes inside rustls when the socket is full; `flush` pushes them out. Over
//! TCP `flush` is free.

use std::future::Future;
use std::io;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A connection's byte stream as the RTMP sessions use it.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when a read may return data (or end of stream) without waiting; it may wake
    /// spuriously, so [`Transport::try_read`] can still say `WouldBlock`.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Read what is available now: `Ok(0)` at end of stream, `WouldBlock` if nothing is.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
    /// The socket, when bytes written to it go to the peer as they are (no TLS): then another
    /// writer may write whole messages to it (the RTMP channel writer).
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        TcpStream::readable(self)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Transport for TlsStream<TcpStream> {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        let (tcp, tls) = self.get_ref();
        // rustls stops wanting to read while it holds decrypted bytes nobody has taken (or after
        // the peer's close_notify): then a read returns at once, whatever the socket says.
        let buffered = !tls.wants_read();
        async move {
            if buffered {
                return Ok(());
            }
            tcp.readable().await
        }
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One poll of the TLS read: it decrypts whatever whole records the socket has.
        match self.read(buf).now_or_never() {
            Some(r) => r,
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Write all of `buf` and flush it to the socket.
pub async fn send<T: Transport>(io: &mut T, buf: &[u8]) -> io::Result<()> {
    io.write_all(buf).await?;
    io.flush().await
}
