//! Busy polling (`busy_poll` in the config): once a worker wakes up, it keeps polling its
//! sockets, without sleeping, until nothing has happened for a short window.
//!
//! Why: on a virtual machine an idle core that sleeps in `epoll_wait` takes tens of
//! microseconds to wake (an interrupt to a halted vCPU), once per event, and a request through
//! a sidecar waits on at least two such wake-ups: its arrival and the upstream's answer. A
//! worker still polling when the next event comes saves them, at the price of the CPU it spins
//! with, which the stats count (`busy_poll.spin_seconds_total`). HAProxy's `busy-polling` makes
//! the same trade, for the same reason; this one stops spinning once traffic pauses.
//!
//! How: a spinner task per worker yields in a loop. tokio's current-thread scheduler, finding only
//! a yielded task to run, polls the I/O driver with a zero timeout instead of parking, so each turn
//! of the loop is one non-blocking `epoll_wait`. The worker's unpark hook (a real sleep has ended:
//! something happened) starts the spinner; it stops once `window` has passed since the last request
//! began or ended on its worker ([`note_activity`], a thread-local count). Each turn also yields
//! the core to any other thread waiting for it, but for a turn right after a request began or
//! ended, when the worker has that request's next step to take. A spinning worker never sleeps, so
//! wall time a turn did not spend on the CPU was spent waiting for it: a turn kept off the CPU
//! longer than [`PREEMPTED`] means a thread that does not yield holds the core (an app computing,
//! say), and the worker stops spinning and does not spin again for [`BACK_OFF`]. Beside such a
//! thread a spinning worker is worse off than a sleeping one: it is runnable already, so its next
//! event waits for the other thread's time slice to end, where a sleeping worker would be woken and
//! run at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use tokio::sync::Notify;

/// Time off the CPU within one turn that means another thread holds the core: a thread that
/// computes holds it for a time slice (milliseconds), while a turn of another spinning worker,
/// with the requests it serves and the switches to it and back, measured up to ~50 µs here
/// (at 50 µs, two sidecars sharing a core backed off most of the time).
const PREEMPTED: Duration = Duration::from_micros(250);

/// How long a worker whose core another thread held sleeps at once, without spinning.
const BACK_OFF: Duration = Duration::from_millis(100);

thread_local! {
    /// Requests begun and ended on this thread's worker: the spinner's sign of traffic.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
}

/// A request began or ended on this worker: its spinner's window starts again.
pub fn note_activity() {
    ACTIVITY.with(|count| count.set(count.get().wrapping_add(1)));
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

/// Shared by every worker: the window the running config sets, and the time spent spinning.
#[derive(Debug, Default)]
pub struct BusyPoll {
    /// Zero: busy polling is off, and workers sleep as soon as they run out of work.
    window_us: AtomicU64,
    spun_us: AtomicU64,
}

/// One worker's spinner, started by the worker's unpark hook.
#[derive(Debug, Default)]
pub struct Spinner {
    wake: Notify,
}

// === impl BusyPoll ===

impl BusyPoll {
    /// Applies from the next wake-up of each worker on.
    pub fn set(&self, window: Duration) {
        self.window_us.store(u64::try_from(window.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    fn window(&self) -> Duration {
        Duration::from_micros(self.window_us.load(Relaxed))
    }

    /// `{"window_us": N, "spin_seconds_total": S}`: the running window, and the wall time the
    /// workers have spent in turns of their spinners that saw no request begin or end: at most
    /// the CPU busy polling cost (a turn yields the core, so on a busy core others ran in it).
    pub fn json(&self) -> serde_json::Value {
        let spun = Duration::from_micros(self.spun_us.load(Relaxed));
        serde_json::json!({ "window_us": self.window_us.load(Relaxed), "spin_seconds_total": spun.as_secs_f64() })
    }
}

// === impl Spinner ===

impl Spinner {
    /// The worker's unpark hook: called on the worker's thread each time it wakes from a sleep.
    /// Costs a load when busy polling is off.
    pub fn unparked(&self, busy_poll: &BusyPoll) {
        if busy_poll.window_us.load(Relaxed) != 0 {
            self.wake.notify_one();
        }
    }

    /// The spinner task: runs on its worker for the worker's life.
    pub async fn run(self: Arc<Self>, busy_poll: Arc<BusyPoll>) {
        // Until when this worker, having found its core held by another thread, sleeps without
        // spinning.
        let mut backed_off: Option<Instant> = None;
        loop {
            self.wake.notified().await;
            let window = busy_poll.window();
            let started = Instant::now();
            if backed_off.is_some_and(|until| started < until) {
                continue;
            }
            let Some(mut cpu_at_last_turn) = thread_cpu_time() else { continue };
            let mut seen = activity();
            let mut last_activity = started;
            let mut last_turn = started;
            let mut spun = Duration::ZERO;
            // Whether the last turn saw a request begin or end: then the worker is in the
            // middle of one (a request read is written upstream by the connection's task,
            // which runs after this one), and the core is not given away before that step.
            let mut mid_request = false;
            while last_turn.duration_since(last_activity) < window {
                if !mid_request {
                    std::thread::yield_now();
                }
                tokio::task::yield_now().await;
                let now = Instant::now();
                let Some(cpu) = thread_cpu_time() else { break };
                let off_cpu = now.duration_since(last_turn).saturating_sub(cpu.saturating_sub(cpu_at_last_turn));
                if off_cpu > PREEMPTED {
                    backed_off = Some(now + BACK_OFF);
                    break;
                }
                let requests = activity();
                mid_request = requests != seen;
                if mid_request {
                    seen = requests;
                    last_activity = now;
                } else {
                    spun += now.duration_since(last_turn);
                }
                last_turn = now;
                cpu_at_last_turn = cpu;
            }
            busy_poll.spun_us.fetch_add(u64::try_from(spun.as_micros()).unwrap_or(u64::MAX), Relaxed);
        }
    }
}

/// The CPU time this thread has used; `None` where the clock cannot be read (then no spinning).
fn thread_cpu_time() -> Option<Duration> {
    let time = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(u64::try_from(time.tv_sec()).ok()?, u32::try_from(time.tv_nsec()).ok()?))
}
