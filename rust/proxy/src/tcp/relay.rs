//! The bytes of an opaque TCP connection, copied both ways. A side that closes its sending half
//! (FIN, or TLS close_notify) has that passed on as a shutdown of the other side's sending
//! half, while the other direction keeps flowing; the relay ends once both directions have
//! ended, one of them fails, no byte moved for the listener's `idle_timeout`, or the listener's
//! drain closes what it still has (`closing`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use meshproxy_telemetry::Reason;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::closing::Closing;
use crate::idle::IdleTimeout;

/// What moved, seen from the downstream side and from the upstream side (they differ by what
/// was in flight when a side failed).
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    /// Read from the client.
    pub received: u64,
    /// Written to the client.
    pub sent: u64,
    pub upstream_sent: u64,
    pub upstream_received: u64,
    /// Ended by the proxy: the idle timeout (`Timeout`), or the listener's drain (`Drained`).
    pub ended: Option<Reason>,
}

/// A stream that counts the bytes read from it and written to it.
struct Counted<I> {
    io: I,
    read: u64,
    written: u64,
}

/// Copies between the client (`down`) and the endpoint (`up`) until both have closed; each
/// side is closed after `idle` without a byte (both are watched: a one-way flow moves bytes on
/// both, and a half-closed side is no longer read), and both once `closing` resolves.
pub async fn relay<D, U>(down: D, up: U, idle: Option<Duration>, closing: &mut Closing) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    match idle {
        Some(timeout) => copy(IdleTimeout::new(down, timeout), IdleTimeout::new(up, timeout), closing).await,
        None => copy(down, up, closing).await,
    }
}

async fn copy<D, U>(down: D, up: U, closing: &mut Closing) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut down, mut up) = (Counted { io: down, read: 0, written: 0 }, Counted { io: up, read: 0, written: 0 });
    let ended = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut down, &mut up) => match copied {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Some(Reason::Timeout),
            _ => None,
        },
        // Both sides close as the relay returns (dropped with it).
        () = closing.closed() => Some(Reason::Drained),
    };
    Relayed { received: down.read, sent: down.written, upstream_sent: up.written, upstream_received: up.read, ended }
}

// === impl Counted ===

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let answer = Pin::new(&mut this.io).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        answer
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.io).poll_write(cx, bytes);
        if let Poll::Ready(Ok(n)) = answer {
            this.written += n as u64;
        }
        answer
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closing::Closer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_half_close_is_passed_on_and_the_other_direction_keeps_flowing() {
        let (client, down) = tokio::io::duplex(64);
        let (up, server) = tokio::io::duplex(64);
        let closer = Closer::new();
        let mut closing = closer.subscribe();
        let relaying = tokio::spawn(async move { relay(down, up, Some(Duration::from_secs(60)), &mut closing).await });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        client_write.write_all(b"question").await.unwrap_or_else(|e| panic!("{e}"));
        client_write.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        let mut asked = Vec::new();
        server_read.read_to_end(&mut asked).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(asked, b"question", "the client's FIN reached the server as end of stream");
        server_write.write_all(b"answer after the client's FIN").await.unwrap_or_else(|e| panic!("{e}"));
        server_write.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer, b"answer after the client's FIN");
        let relayed = relaying.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((relayed.received, relayed.sent, relayed.ended), (8, 29, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_ends_after_the_idle_timeout() {
        let (_client, down) = tokio::io::duplex(64);
        let (up, _server) = tokio::io::duplex(64);
        let relayed = relay(down, up, Some(Duration::from_secs(10)), &mut Closer::new().subscribe()).await;
        assert_eq!(relayed.ended, Some(Reason::Timeout));
    }

    #[tokio::test]
    async fn a_relay_closes_both_sides_when_its_listener_closes_what_it_has() {
        let (mut client, down) = tokio::io::duplex(64);
        let (up, mut server) = tokio::io::duplex(64);
        let closer = Closer::new();
        let mut closing = closer.subscribe();
        let relaying = tokio::spawn(async move { relay(down, up, None, &mut closing).await });
        client.write_all(b"ping").await.unwrap_or_else(|e| panic!("{e}"));
        let mut ping = [0u8; 4];
        server.read_exact(&mut ping).await.unwrap_or_else(|e| panic!("{e}"));
        closer.close();
        let relayed = relaying.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((relayed.received, relayed.ended), (4, Some(Reason::Drained)));
        let (mut rest, mut more) = (Vec::new(), Vec::new());
        assert_eq!(client.read_to_end(&mut rest).await.map(|_| rest.len()).ok(), Some(0), "the client's side ended");
        assert_eq!(server.read_to_end(&mut more).await.map(|_| more.len()).ok(), Some(0), "the server's side ended");
    }
}
