//! Log lines from the data path (a refused handshake, a request a dry-run policy would deny),
//! written by one background thread so that a worker never blocks on stderr. The queue is
//! bounded: when a flood of events outpaces the writer, lines are dropped and counted, and the
//! count is reported with the next line that gets through.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines waiting for the writer; beyond this, new lines are dropped.
const QUEUE: usize = 4096;

static WRITER: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Queues one line for stderr (a newline is added). Never blocks.
pub fn log(line: String) {
    let Some(writer) = WRITER.get_or_init(start_writer) else {
        DROPPED.fetch_add(1, Relaxed);
        return;
    };
    match writer.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Lines dropped since start because the queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

fn start_writer() -> Option<SyncSender<String>> {
    let (sender, lines) = mpsc::sync_channel::<String>(QUEUE);
    let spawned = std::thread::Builder::new().name("meshproxy-events".into()).spawn(move || {
        let mut reported = 0;
        for line in lines {
            let mut stderr = std::io::stderr().lock();
            let dropped = DROPPED.load(Relaxed);
            if dropped > reported {
                let _ = writeln!(stderr, "meshproxy: {} log lines dropped (queue full)", dropped - reported);
                reported = dropped;
            }
            let _ = writeln!(stderr, "meshproxy: {line}");
        }
    });
    spawned.ok().map(|_| sender)
}
