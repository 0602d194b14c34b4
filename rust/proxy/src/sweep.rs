//! Closing a pool's connections once unused for their cluster's `idle_timeout` (Envoy's
//! `common_http_protocol_options.idle_timeout`), so that an upstream is not left holding
//! sockets the proxy will not use, and the proxy does not send on one the upstream dropped.
//!
//! One task per pool, and only while the pool holds connections: it sleeps until the oldest
//! idle HTTP/1.1 connection's time is up and closes those whose time is up (dropping its sender
//! closes an idle HTTP/1.1 connection). The shared HTTP/2 connection is marked used by each
//! request that takes it (a flag, under the lock the request takes anyway); the task looks
//! four times per timeout and lets go of a connection found unused at four looks in a row: no
//! new stream goes on it, the streams still open on it finish, and then it closes. Requests pay
//! nothing more than the flag; the pool's timestamp of an idle connection was already taken.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// Looks at the HTTP/2 connection per timeout: it is let go of between one timeout and a
/// quarter more after its last request.
const TICKS: u32 = 4;

/// A pool the sweep looks after (`pool::Pool`).
pub(crate) trait Sweep: Send + Sync + 'static {
    /// Whether a sweep runs for it.
    fn swept(&self) -> &AtomicBool;

    /// Closes the connections past their time (`http2` says when the HTTP/2 one is); when the
    /// sweep should look again, or `None` once the pool holds no connection (then, under the
    /// lock connections go into the pool under, it clears `swept`).
    fn look(&self, http2: &mut Looks) -> Option<Instant>;
}

/// The sweep's looks at a pool's HTTP/2 connection: when the next is due, and how many in a
/// row found it unused.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    due: Option<Instant>,
    quiet: u32,
}

/// Starts the pool's sweep unless it runs. Called after a connection went into the pool, with
/// the lock the sweep stops under held, so a connection is never left unswept.
pub(crate) fn start<P: Sweep>(pool: &Arc<P>) {
    if pool.swept().load(Relaxed) {
        return;
    }
    // A body may be dropped outside the runtime (as the engine stops): nothing to sweep then.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if pool.swept().swap(true, Relaxed) {
        return;
    }
    let pool = Arc::downgrade(pool);
    runtime.spawn(sweep(pool));
}

async fn sweep<P: Sweep>(pool: Weak<P>) {
    let mut http2 = Looks::default();
    loop {
        // Held only while looking: a pool whose endpoint left the config goes.
        let Some(next) = pool.upgrade().and_then(|pool| pool.look(&mut http2)) else {
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}

// === impl Looks ===

impl Looks {
    /// A look at the HTTP/2 connection, if one is due: whether to let go of it (unused at four
    /// looks in a row), and when the next look is due (`None` once let go of).
    pub(crate) fn look(&mut self, now: Instant, used: bool, idle_timeout: Duration) -> (bool, Option<Instant>) {
        if self.due.is_none_or(|due| due <= now) {
            self.quiet = if used { 0 } else { self.quiet + 1 };
            self.due = Some(now + (idle_timeout / TICKS).max(Duration::from_millis(1)));
        }
        if self.quiet >= TICKS {
            *self = Looks::default();
            return (true, None);
        }
        (false, self.due)
    }

    /// No HTTP/2 connection: the next one starts afresh.
    pub(crate) fn reset(&mut self) {
        *self = Looks::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_let_go_of_after_four_looks_without_a_request() {
        let timeout = Duration::from_secs(60);
        let mut looks = Looks::default();
        let start = Instant::now();
        // Used at the first look, then not: let go of at the fourth quiet look, a timeout on.
        let mut used = true;
        let mut at = start;
        loop {
            match looks.look(at, std::mem::take(&mut used), timeout) {
                (true, _) => break,
                (false, Some(due)) => at = due,
                (false, None) => panic!("a look is always due while the connection is kept"),
            }
        }
        assert_eq!(at - start, timeout);
        // A request between looks starts the count again.
        let mut looks = Looks::default();
        assert!(!looks.look(start, false, timeout).0);
        assert!(!looks.look(start + timeout / 4, true, timeout).0);
        for n in 2..=4 {
            assert!(!looks.look(start + timeout / 4 * n, false, timeout).0);
        }
        assert!(looks.look(start + timeout / 4 * 5, false, timeout).0);
    }
}
