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

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Pool;

/// Looks at the HTTP/2 connection per timeout: it is let go of between one timeout and a
/// quarter more after its last request.
const TICKS: u32 = 4;

/// Starts the pool's sweep unless it runs. Called after a connection went into the pool, with
/// the lock the sweep stops under held, so a connection is never left unswept.
pub(crate) fn start(pool: &Arc<Pool>) {
    if pool.swept.load(Relaxed) {
        return;
    }
    // A body may be dropped outside the runtime (as the engine stops): nothing to sweep then.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if pool.swept.swap(true, Relaxed) {
        return;
    }
    let pool = Arc::downgrade(pool);
    runtime.spawn(sweep(pool));
}

async fn sweep(pool: Weak<Pool>) {
    let mut http2 = Looks::default();
    loop {
        // Held only while looking: a pool whose endpoint left the config goes.
        let Some(next) = pool.upgrade().and_then(|pool| look(&pool, &mut http2)) else {
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}

/// The sweep's looks at the HTTP/2 connection: when the next is due, and how many in a row
/// found it unused.
#[derive(Default)]
struct Looks {
    due: Option<Instant>,
    quiet: u32,
}

/// Closes what is past its time; when the sweep should look again, or `None` (the sweep ends)
/// once the pool holds no connection.
fn look(pool: &Pool, http2: &mut Looks) -> Option<Instant> {
    let now = Instant::now();
    // Locked in this order only here; elsewhere one at a time.
    let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
    let mut shared = pool.shared.lock().unwrap_or_else(|p| p.into_inner());
    idle.retain(|entry| entry.since.elapsed() < entry.timeout && !entry.sender.is_closed());
    let mut next = idle.iter().map(|entry| now + entry.timeout.saturating_sub(entry.since.elapsed())).min();
    if shared.as_ref().is_some_and(|current| current.sender.is_closed()) {
        *shared = None;
    }
    match shared.as_mut() {
        None => *http2 = Looks::default(),
        Some(current) => {
            let tick = (current.idle_timeout / TICKS).max(Duration::from_millis(1));
            if http2.due.is_none_or(|due| due <= now) {
                http2.quiet = if std::mem::take(&mut current.used) { 0 } else { http2.quiet + 1 };
                http2.due = Some(now + tick);
            }
            if http2.quiet >= TICKS {
                // New streams go on a new connection; this one closes once its streams end.
                *shared = None;
                *http2 = Looks::default();
            } else if let Some(due) = http2.due {
                next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
    }
    if next.is_none() {
        pool.swept.store(false, Relaxed);
    }
    next
}
