//! Where the brokers' sockets come from: the operating system, or the deterministic
//! simulator's network (turmoil) when the code runs on one of its hosts. Every listener
//! and every outgoing connection of the broker (clients' listeners, replica fetchers,
//! coordinator calls, the metadata log) goes through here, so the simulator runs the same
//! code the binary does; outside a simulation these are tokio's sockets and nothing else.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP connection: tokio's, or the simulator's.
#[derive(Debug)]
pub enum TcpStream {
    Os(tokio::net::TcpStream),
    Sim(turmoil::net::TcpStream),
}

/// A listening socket: tokio's, or the simulator's.
pub enum TcpListener {
    Os(tokio::net::TcpListener),
    Sim(turmoil::net::TcpListener),
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TcpListener::Os(l) => l.fmt(f),
            TcpListener::Sim(l) => write!(f, "TcpListener::Sim({:?})", l.local_addr()),
        }
    }
}

/// Splits `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 one).
fn host_port(addr: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{addr}' is not HOST:PORT"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

impl TcpStream {
    /// Connects to `addr` (`HOST:PORT`).
    pub async fn connect(addr: &str) -> io::Result<TcpStream> {
        if turmoil::in_simulation() {
            let (host, port) = host_port(addr)?;
            return Ok(TcpStream::Sim(
                turmoil::net::TcpStream::connect((host, port)).await?,
            ));
        }
        Ok(TcpStream::Os(tokio::net::TcpStream::connect(addr).await?))
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpStream::Os(s) => s.set_nodelay(on),
            TcpStream::Sim(s) => s.set_nodelay(on),
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Os(s) => s.peer_addr(),
            TcpStream::Sim(s) => s.peer_addr(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Os(s) => s.local_addr(),
            TcpStream::Sim(s) => s.local_addr(),
        }
    }

    /// The operating system's socket, for what needs its descriptor (sendfile); `None` in
    /// the simulator.
    pub fn os(&self) -> Option<&tokio::net::TcpStream> {
        match self {
            TcpStream::Os(s) => Some(s),
            TcpStream::Sim(_) => None,
        }
    }
}

impl From<tokio::net::TcpStream> for TcpStream {
    fn from(s: tokio::net::TcpStream) -> Self {
        TcpStream::Os(s)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpStream::Os(s) => Pin::new(s).poll_read(cx, buf),
            TcpStream::Sim(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TcpStream::Os(s) => Pin::new(s).poll_write(cx, buf),
            TcpStream::Sim(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpStream::Os(s) => Pin::new(s).poll_flush(cx),
            TcpStream::Sim(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpStream::Os(s) => Pin::new(s).poll_shutdown(cx),
            TcpStream::Sim(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TcpStream::Os(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TcpStream::Sim(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            TcpStream::Os(s) => s.is_write_vectored(),
            TcpStream::Sim(s) => s.is_write_vectored(),
        }
    }
}

impl TcpListener {
    /// Listens on `addr` (`HOST:PORT`). A simulated host has one address: it listens on
    /// the port at that address whatever the host part says.
    pub async fn bind(addr: &str) -> io::Result<TcpListener> {
        if turmoil::in_simulation() {
            let (_, port) = host_port(addr)?;
            let any = SocketAddr::from(([0, 0, 0, 0], port));
            return Ok(TcpListener::Sim(
                turmoil::net::TcpListener::bind(any).await?,
            ));
        }
        Ok(TcpListener::Os(tokio::net::TcpListener::bind(addr).await?))
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            TcpListener::Os(l) => l.accept().await.map(|(s, a)| (TcpStream::Os(s), a)),
            TcpListener::Sim(l) => l.accept().await.map(|(s, a)| (TcpStream::Sim(s), a)),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpListener::Os(l) => l.local_addr(),
            TcpListener::Sim(l) => l.local_addr(),
        }
    }
}

impl From<tokio::net::TcpListener> for TcpListener {
    fn from(l: tokio::net::TcpListener) -> Self {
        TcpListener::Os(l)
    }
}

/// The wall clock: the simulated one on a simulator's host (its epoch plus the simulated
/// time elapsed), the system's otherwise. Record timestamps, retention and incarnations
/// read it, so that a simulated run does not depend on when it ran.
pub fn wall_clock() -> std::time::SystemTime {
    match turmoil::since_epoch() {
        Some(since) if turmoil::in_simulation() => std::time::UNIX_EPOCH + since,
        _ => std::time::SystemTime::now(),
    }
}

/// [`wall_clock`] in milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> i64 {
    wall_clock()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("b1:9092").expect("splits"), ("b1", 9092));
        assert_eq!(host_port("127.0.0.1:1").expect("splits"), ("127.0.0.1", 1));
        assert_eq!(host_port("[::1]:9093").expect("splits"), ("::1", 9093));
        assert!(host_port("b1").is_err());
        assert!(host_port("b1:port").is_err());
    }
}
