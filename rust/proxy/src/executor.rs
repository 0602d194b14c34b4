//! The executor hyper spawns its HTTP/2 tasks with (a task per stream on the server side, the
//! connection and request-body tasks on the client side), and the spawn the pool uses for its
//! connection tasks.
//!
//! Those futures are large (hyper's HTTP/2 stream and connection state: several KiB), and
//! `tokio::spawn` passes the future by value through several layers before it lands in the
//! task's allocation: each layer is a memmove of the whole future, repeated for every stream.
//! Boxed first, the future is written once and only a pointer travels.

use std::future::Future;

/// `hyper_util::rt::TokioExecutor`, with the future boxed before it is spawned.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        spawn_boxed(future);
    }
}

/// `tokio::spawn` for a large future: boxed here, so only the box is moved into the task.
pub fn spawn_boxed<F>(future: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    drop(tokio::spawn(Box::pin(future)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_futures_run_to_completion() {
        let (done, finished) = tokio::sync::oneshot::channel();
        hyper::rt::Executor::execute(&BoxingExecutor, async move {
            let _ = done.send(42);
        });
        assert_eq!(finished.await.ok(), Some(42));
    }
}
