//! How a listener stops, in two steps. First it stops accepting (removed by a reload, closed by
//! a drain or a shutdown): its HTTP connections finish the requests in progress and close. But
//! an opaque TCP connection or a tunnel (upgrade, CONNECT) never ends by itself, nor does a
//! response that streams on; so once the drain timeout has passed, the engine tells the
//! listener to close what it still has, as Envoy does at the end of its drain time. Its
//! connections and tunnels watch one value for both steps ([`Closing`]): it costs them nothing
//! until then (no timer, nothing per request; a tunnel or TCP connection subscribes once).

use tokio::sync::watch;

/// Where a listener is in its stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Serving,
    /// No longer accepting; HTTP connections end once their requests have.
    Stopped,
    /// What is still open closes.
    Closed,
}

/// Owned by the listener: moves it through the steps, each once.
#[derive(Debug)]
pub struct Closer(watch::Sender<Stage>);

/// What the accept loop, a connection or a tunnel waits on, beside its work.
#[derive(Debug, Clone)]
pub struct Closing(watch::Receiver<Stage>);

// === impl Closer ===

impl Closer {
    pub fn new() -> Closer {
        Closer(watch::channel(Stage::Serving).0)
    }

    pub fn subscribe(&self) -> Closing {
        Closing(self.0.subscribe())
    }

    /// Stop accepting; HTTP connections shut down gracefully.
    pub fn stop(&self) {
        self.0.send_if_modified(|stage| std::mem::replace(stage, (*stage).max(Stage::Stopped)) < Stage::Stopped);
    }

    /// Close what is still open (stopping first, if not yet).
    pub fn close(&self) {
        self.0.send_replace(Stage::Closed);
    }
}

impl Default for Closer {
    fn default() -> Closer {
        Closer::new()
    }
}

// === impl Closing ===

impl Closing {
    /// Resolves once the listener has stopped accepting.
    pub async fn stopped(&mut self) {
        self.reached(Stage::Stopped).await;
    }

    /// Resolves once the listener closes what it still has.
    pub async fn closed(&mut self) {
        self.reached(Stage::Closed).await;
    }

    /// Never, should the listener go away first: only its engine stopping does that, and that
    /// drops every task anyway.
    async fn reached(&mut self, stage: Stage) {
        if self.0.wait_for(|now| *now >= stage).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stopping_then_closing_is_seen_by_what_waits_and_what_subscribes_later() {
        let closer = Closer::new();
        let mut waiting = closer.subscribe();
        closer.stop();
        waiting.stopped().await;
        assert!(tokio::time::timeout(Duration::from_secs(60), waiting.closed()).await.is_err(), "stopped, not closed");
        let closed = tokio::spawn(async move { waiting.closed().await });
        closer.close();
        assert!(closed.await.is_ok());
        closer.stop();
        // Subscribed after both: resolves at once for each, and a later stop changes nothing.
        let mut late = closer.subscribe();
        late.stopped().await;
        late.closed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_closer_gone_without_closing_never_closes() {
        let closer = Closer::new();
        let mut closing = closer.subscribe();
        drop(closer);
        assert!(tokio::time::timeout(Duration::from_secs(3600), closing.stopped()).await.is_err());
    }
}
