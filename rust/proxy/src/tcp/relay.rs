//! The bytes of an opaque TCP connection, copied both ways. A side that closes its sending half
//! (FIN, or TLS close_notify) has that passed on as a shutdown of the other side's sending
//! half, while the other direction keeps flowing; the relay ends once both directions have
//! ended, one of them fails, or no byte moved for the listener's `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    /// Ended by the idle timeout.
    pub timed_out: bool,
}

/// A stream that counts the bytes read from it and written to it.
struct Counted<I> {
    io: I,
    read: u64,
    written: u64,
}

/// Copies between the client (`down`) and the endpoint (`up`) until both have closed; each
/// side is closed after `idle` without a byte (both are watched: a one-way flow moves bytes on
/// both, and a half-closed side is no longer read).
pub async fn relay<D, U>(down: D, up: U, idle: Option<Duration>) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    match idle {
        Some(timeout) => copy(IdleTimeout::new(down, timeout), IdleTimeout::new(up, timeout)).await,
        None => copy(down, up).await,
    }
}

async fn copy<D, U>(down: D, up: U) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut down, mut up) = (Counted { io: down, read: 0, written: 0 }, Counted { io: up, read: 0, written: 0 });
    let ended = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    Relayed {
        received: down.read,
        sent: down.written,
        upstream_sent: up.written,
        upstream_received: up.read,
        timed_out: ended.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut),
    }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_half_close_is_passed_on_and_the_other_direction_keeps_flowing() {
        let (client, down) = tokio::io::duplex(64);
        let (up, server) = tokio::io::duplex(64);
        let relaying = tokio::spawn(relay(down, up, Some(Duration::from_secs(60))));
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
        assert_eq!((relayed.received, relayed.sent, relayed.timed_out), (8, 29, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_relay_ends_after_the_idle_timeout() {
        let (_client, down) = tokio::io::duplex(64);
        let (up, _server) = tokio::io::duplex(64);
        let relayed = relay(down, up, Some(Duration::from_secs(10))).await;
        assert!(relayed.timed_out);
    }
}
