//! The engine's worker threads: one single-threaded tokio runtime per thread (thread per core).
//! A connection lives on one worker from accept to close, together with the upstream
//! connections that worker opens, so a request never hops threads: no work stealing, no
//! cross-thread wake-ups, no contended locks on the request path.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

use crate::busy_poll::{BusyPoll, Spinner};

thread_local! {
    /// The index of the worker running on this thread; 0 off the workers (control threads).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker the caller runs on, to pick per-worker state such as pools.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Bound on how far ahead a worker's timer wheel plans its next wake ([`keep_next_wake_near`]).
const NEXT_WAKE_WITHIN: Duration = Duration::from_secs(1);

pub struct Workers {
    workers: Vec<Worker>,
    handles: Arc<WorkerHandles>,
}

/// What accept loops hold to hand connections out: handles don't keep the runtimes alive.
#[derive(Debug)]
pub struct WorkerHandles {
    handles: Vec<Handle>,
    /// Round-robin cursor over the workers.
    next: AtomicUsize,
}

struct Worker {
    runtime: Arc<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

// === impl Workers ===

impl Workers {
    pub fn start(count: usize, busy_poll: &Arc<BusyPoll>) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            workers.push(Worker::start(index, busy_poll.clone())?);
        }
        let handles = workers.iter().map(|w| w.runtime.handle().clone()).collect();
        Ok(Workers { workers, handles: Arc::new(WorkerHandles { handles, next: AtomicUsize::new(0) }) })
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// The worker that runs the accept loops; listening sockets register with it.
    pub fn first(&self) -> &Handle {
        &self.handles.handles[0]
    }

    pub fn handles(&self) -> Arc<WorkerHandles> {
        self.handles.clone()
    }

    /// Runs a future to completion on the first worker, waiting from a control thread. `None`
    /// if the worker stopped first.
    pub fn block_on<F>(&self, future: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.first().spawn(async move {
            let _ = done.send(future.await);
        });
        wait.recv().ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.stop();
        }
    }
}

// === impl WorkerHandles ===

impl WorkerHandles {
    /// The worker that takes the next accepted connection, and its index.
    pub fn next(&self) -> (usize, &Handle) {
        let index = self.next.fetch_add(1, Relaxed) % self.handles.len();
        (index, &self.handles[index])
    }
}

// === impl Worker ===

impl Worker {
    fn start(index: usize, busy_poll: Arc<BusyPoll>) -> std::io::Result<Worker> {
        let spinner = Arc::new(Spinner::default());
        let unparked = (spinner.clone(), busy_poll.clone());
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_unpark(move || unparked.0.unparked(&unparked.1))
                .build()?,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let driven = runtime.clone();
        let thread = std::thread::Builder::new().name(format!("meshproxy-worker-{index}")).spawn(move || {
            CURRENT.with(|current| current.set(index));
            driven.spawn(spinner.run(busy_poll));
            driven.spawn(keep_next_wake_near());
            let _ = driven.block_on(stopped);
        })?;
        Ok(Worker { runtime, stop: Some(stop), thread: Some(thread) })
    }

    /// Ends the thread; tasks still running are dropped with the runtime.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A timer due every [`NEXT_WAKE_WITHIN`], for the worker's life.
///
/// Why: tokio wakes its I/O driver, by a write to an eventfd, whenever a timer is set to fire
/// before the wake the driver last planned, or when none was planned. On a worker the driver is
/// the worker's own thread, already running, so the write is wasted: a syscall, and an event
/// for the next `epoll_wait` to return. With nothing else timed, every request paid it (its
/// route timeout, then hyper's header-read timeout as the connection waits for the next
/// request), on the path between reading a request and sending it upstream. With a wake always
/// planned within a second, a timer set for later than that never triggers it; the cost is one
/// wake a second of an idle worker (with `busy_poll` on, one window of spinning after it).
async fn keep_next_wake_near() {
    let mut tick = tokio::time::interval(NEXT_WAKE_WITHIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}
