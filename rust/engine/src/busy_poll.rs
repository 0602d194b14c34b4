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
//! run at once. A short turn of another thread is no reason to stop at once: a sidecar woken beside
//! this one runs for a few microseconds and sleeps again. But one spinner is all a core needs: it
//! keeps the core awake, so every other worker on it is woken at the cost of a switch, not of an
//! idle core's wake-up, while two spinners only take turns. A worker that finds another thread ran
//! in most of its turns ([`Company`]) backs off, unless it had the core to itself until then: of
//! two spinners on one core the one that came last leaves, and the other goes on alone. Two that
//! came together both leave, for back-offs of random length, so the first back finds the core its
//! own.

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

/// How long, on average, a worker that found its core shared sleeps at once, without spinning.
/// Each back-off is drawn from half to one and a half times this, so that two spinners that
/// left together do not come back together.
const BACK_OFF: Duration = Duration::from_millis(100);

/// Time off the CPU within one turn that means another thread ran in it. A turn alone on its
/// core is never off it (the yield returns at once); another spinner's turn, with the switches
/// to it and back, measured 3-5 µs here.
const OTHERS_RAN: Duration = Duration::from_micros(1);

/// Turns judged together: another thread ran in most turns of a sample, or the core was ours.
const SAMPLE_TURNS: u32 = 64;

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

/// Whom a spinning worker shares its core with, told from its turns: how many of the current
/// sample's turns another thread ran in, and whether the core was this worker's own before.
#[derive(Debug, Default)]
struct Company {
    turns: u32,
    shared: u32,
    standing: Standing,
}

/// A spinner's claim to its core, from the samples of its turns since it last backed off.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// No sample yet had the core to itself: if the first is crowded, this worker came to a
    /// core another spinner holds, and it is the one to leave.
    #[default]
    Newcomer,
    /// Its last sample had the core to itself: a crowded sample now means another spinner
    /// came, which leaves after its own first sample.
    Holder,
    /// A holder whose last sample was crowded: crowded again, the other thread is staying.
    Challenged,
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
        // Until when this worker, having found its core shared, sleeps without spinning.
        let mut backed_off: Option<Instant> = None;
        // Kept from one window to the next: a worker that held its core keeps its claim while
        // traffic pauses, and one that backed off comes back a newcomer.
        let mut company = Company::default();
        loop {
            self.wake.notified().await;
            let window = busy_poll.window();
            let started = Instant::now();
            if backed_off.is_some_and(|until| started < until) {
                continue;
            }
            company.start_sample();
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
                if off_cpu > PREEMPTED || company.should_leave(off_cpu) {
                    company = Company::default();
                    backed_off = Some(now + back_off());
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

// === impl Company ===

impl Company {
    /// Drops the turns counted so far, keeping the claim: a window begins, or a sample ended.
    fn start_sample(&mut self) {
        self.turns = 0;
        self.shared = 0;
    }

    /// Notes a turn that spent `off_cpu` off the CPU. True at the end of a sample that tells
    /// this worker to leave its core: another thread ran in at least three turns of four (a
    /// thread that keeps the core busy, another spinner or a worker under load, which spinning
    /// cannot help), and this worker did not hold the core before, or held it and was crowded
    /// in the sample before too.
    fn should_leave(&mut self, off_cpu: Duration) -> bool {
        self.turns += 1;
        if off_cpu > OTHERS_RAN {
            self.shared += 1;
        }
        if self.turns < SAMPLE_TURNS {
            return false;
        }
        let crowded = self.shared * 4 >= self.turns * 3;
        self.start_sample();
        let (standing, leave) = match (crowded, self.standing) {
            (false, _) => (Standing::Holder, false),
            (true, Standing::Holder) => (Standing::Challenged, false),
            (true, Standing::Newcomer | Standing::Challenged) => (Standing::Newcomer, true),
        };
        self.standing = standing;
        leave
    }
}

/// A back-off of random length around [`BACK_OFF`].
fn back_off() -> Duration {
    BACK_OFF.mul_f64(rand::random_range(0.5..1.5))
}

/// The CPU time this thread has used; `None` where the clock cannot be read (then no spinning).
fn thread_cpu_time() -> Option<Duration> {
    let time = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(u64::try_from(time.tv_sec()).ok()?, u32::try_from(time.tv_nsec()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample of turns, another thread running in `shared_turns` of them: whether it ends
    /// in leaving. No verdict comes before the sample is full.
    fn sample(company: &mut Company, shared_turns: u32) -> bool {
        let mut verdicts = (0..SAMPLE_TURNS).map(|turn| {
            let off_cpu = if turn < shared_turns { Duration::from_micros(4) } else { Duration::ZERO };
            company.should_leave(off_cpu)
        });
        let judged_early = verdicts.by_ref().take(SAMPLE_TURNS as usize - 1).any(|leave| leave);
        assert!(!judged_early, "a verdict before the sample was full");
        verdicts.next().unwrap_or(false)
    }

    const CROWDED: u32 = SAMPLE_TURNS * 3 / 4;

    #[test]
    fn a_newcomer_to_a_crowded_core_leaves_after_one_sample() {
        assert!(sample(&mut Company::default(), SAMPLE_TURNS));
        assert!(sample(&mut Company::default(), CROWDED));
        assert!(!sample(&mut Company::default(), CROWDED - 1));
    }

    #[test]
    fn a_holder_outlasts_one_crowded_sample_not_two() {
        let mut company = Company::default();
        assert!(!sample(&mut company, 0));
        assert!(!sample(&mut company, SAMPLE_TURNS), "the holder of the core left for a newcomer");
        assert!(sample(&mut company, SAMPLE_TURNS), "the holder stayed beside a thread that stays");
        assert_eq!(company.standing, Standing::Newcomer);
    }

    #[test]
    fn a_holder_left_alone_again_keeps_its_claim() {
        let mut company = Company::default();
        assert!(!sample(&mut company, CROWDED - 1));
        assert!(!sample(&mut company, SAMPLE_TURNS));
        assert!(!sample(&mut company, 1));
        assert!(!sample(&mut company, SAMPLE_TURNS));
        assert_eq!(company.standing, Standing::Challenged);
    }

    #[test]
    fn time_off_the_core_below_a_switch_is_not_company() {
        let mut company = Company::default();
        let verdicts: Vec<bool> = (0..SAMPLE_TURNS).map(|_| company.should_leave(Duration::from_nanos(900))).collect();
        assert!(!verdicts.contains(&true));
        assert_eq!(company.standing, Standing::Holder);
    }

    #[test]
    fn back_offs_differ_and_stay_around_the_mean() {
        let drawn: Vec<Duration> = (0..100).map(|_| back_off()).collect();
        assert!(drawn.iter().all(|pause| (BACK_OFF / 2..BACK_OFF * 3 / 2).contains(pause)));
        assert!(drawn.iter().any(|pause| *pause != drawn[0]));
    }
}
