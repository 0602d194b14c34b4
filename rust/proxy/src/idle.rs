//! A downstream connection closed once no byte has moved either way for the listener's
//! `idle_timeout` (as HAProxy's `timeout client`): a client that opened a connection and went
//! quiet, or stopped reading, gives its socket back.
//!
//! Reading the clock at every read and write would cost a little on every request. Instead the
//! connection notes only *that* it moved (a flag), and a timer ticks four times per timeout: a
//! connection found quiet at four ticks in a row is closed. It is closed after the timeout and
//! before a quarter more, and the timer of a busy connection is reset four times per timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Quiet ticks that close the connection; a tick is the timeout over this.
const TICKS: u32 = 4;

/// `io` that fails with `TimedOut` once it has been idle for the timeout.
#[derive(Debug)]
pub struct IdleTimeout<I> {
    io: I,
    quiet: Quiet,
}

/// The clock of something that ends once quiet for a timeout: told *that* it moved (a flag),
/// polled when it has nothing to do. Shared by connections (`IdleTimeout`) and a route's
/// streams (`timeouts`).
#[derive(Debug)]
pub struct Quiet {
    tick: Duration,
    timer: Pin<Box<Sleep>>,
    moved: bool,
    quiet_ticks: u32,
    /// Whether the timer has been polled since it was last set.
    registered: bool,
}

// === impl IdleTimeout ===

impl<I> IdleTimeout<I> {
    pub fn new(io: I, timeout: Duration) -> IdleTimeout<I> {
        IdleTimeout { io, quiet: Quiet::new(timeout) }
    }

    pub fn into_inner(self) -> I {
        self.io
    }

    /// What `io` answered, noting that it moved; when it has nothing, the idle check.
    #[inline(always)]
    fn observe<T>(&mut self, cx: &mut Context<'_>, answer: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match answer {
            Poll::Ready(done) => {
                self.quiet.moved();
                Poll::Ready(done)
            }
            Poll::Pending => self
                .quiet
                .poll_quiet(cx, || false)
                .map(|()| Err(io::Error::new(io::ErrorKind::TimedOut, "the connection was idle for its listener's idle_timeout"))),
        }
    }
}

// === impl Quiet ===

impl Quiet {
    pub fn new(timeout: Duration) -> Quiet {
        let tick = timeout / TICKS;
        Quiet { tick, timer: Box::pin(tokio::time::sleep(tick)), moved: false, quiet_ticks: 0, registered: false }
    }

    #[inline]
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// Called when there is nothing to do: pending until quiet for the timeout, then ready.
    /// The timer is polled (which registers the task's waker with it) once per tick; in
    /// between, a look at whether it has fired costs a load. At each tick, `also_moved` is
    /// asked whether something the flag does not see moved (a counter kept elsewhere).
    #[inline]
    pub fn poll_quiet(&mut self, cx: &mut Context<'_>, mut also_moved: impl FnMut() -> bool) -> Poll<()> {
        if self.registered && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        self.registered = true;
        while self.timer.as_mut().poll(cx).is_ready() {
            if std::mem::take(&mut self.moved) | also_moved() {
                self.quiet_ticks = 0;
            } else {
                self.quiet_ticks += 1;
                if self.quiet_ticks >= TICKS {
                    return Poll::Ready(());
                }
            }
            let next = Instant::now() + self.tick;
            self.timer.as_mut().reset(next);
        }
        Poll::Pending
    }
}

// Always inlined into the reads and writes of the connection's IO: out of line, each of a
// request's four or so reads and writes paid a call's prologue and epilogue (~15 instructions).
impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    #[inline(always)]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.io).poll_read(cx, buf);
        this.observe(cx, answer)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    #[inline(always)]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.io).poll_write(cx, buf);
        this.observe(cx, answer)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.observe(cx, answer)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_ends_after_the_timeout_and_a_busy_one_does_not() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(60));
        let started = Instant::now();
        // Busy for three minutes: a byte every 20 seconds keeps it open.
        for _ in 0..9 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            far.write_all(b"x").await.unwrap_or_else(|e| panic!("{e}"));
            let mut byte = [0u8];
            idle.read_exact(&mut byte).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let quiet_from = Instant::now();
        assert!(quiet_from - started >= Duration::from_secs(180));
        let mut byte = [0u8];
        let ended = idle.read(&mut byte).await;
        assert_eq!(ended.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let quiet = quiet_from.elapsed();
        assert!(quiet >= Duration::from_secs(60) && quiet <= Duration::from_secs(75), "closed after {quiet:?} of quiet");
    }
}
