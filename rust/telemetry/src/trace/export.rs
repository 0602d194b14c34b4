//! Finished, sampled spans on their way out: the request path pushes them into a bounded queue
//! without waiting (a full queue drops the span and counts it), and Python's exporter thread
//! drains them in batches, each a single call, to send over OTLP.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::context::SpanContext;
use crate::stats::TracingStats;
use crate::record::Record;

/// Spans waiting for the exporter; beyond this, spans are dropped.
pub const QUEUE: usize = 8_192;

/// The proxy's span of one finished request: where it sits in its trace, and what happened.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    pub context: SpanContext,
    pub record: Arc<Record>,
}

#[derive(Debug)]
enum Message {
    Span(FinishedSpan),
    /// Ends a drain early: the exporter is stopping.
    Wake,
}

/// The engine's span queue; it outlives config swaps.
#[derive(Debug)]
pub struct SpanQueue {
    spans: SyncSender<Message>,
    /// Only the exporter drains, one batch at a time; never locked on the request path.
    drained: Mutex<Receiver<Message>>,
    stats: Arc<TracingStats>,
}

// === impl SpanQueue ===

impl SpanQueue {
    pub fn new(capacity: usize, stats: Arc<TracingStats>) -> SpanQueue {
        let (spans, drained) = mpsc::sync_channel(capacity);
        SpanQueue { spans, drained: Mutex::new(drained), stats }
    }

    /// Queues a span; never blocks.
    pub fn push(&self, span: FinishedSpan) {
        match self.spans.try_send(Message::Span(span)) {
            Ok(()) => self.stats.spans.inc(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.stats.dropped.inc(),
        }
    }

    /// Up to `max` spans: returns once it has `max`, or once `wait` has passed since the call
    /// (with what has come by then, maybe none), or at once after [`SpanQueue::wake`].
    pub fn drain(&self, max: usize, wait: Duration) -> Vec<FinishedSpan> {
        let deadline = Instant::now() + wait;
        let drained = self.drained.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Vec::new();
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            match drained.recv_timeout(left) {
                Ok(Message::Span(span)) => batch.push(span),
                Ok(Message::Wake) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        batch
    }

    /// Ends the drain in progress, if any, without waiting for its time to pass.
    pub fn wake(&self) {
        let _ = self.spans.try_send(Message::Wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceId};

    fn span(n: u8) -> FinishedSpan {
        let context = SpanContext { trace_id: TraceId([n; 16]), span_id: SpanId([n; 8]), parent: None, sampled: true };
        FinishedSpan { context, record: Arc::new(Record::example(200)) }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans() {
        let stats = Arc::new(TracingStats::default());
        let queue = SpanQueue::new(2, stats.clone());
        for n in 1..=5 {
            queue.push(span(n));
        }
        assert_eq!((stats.spans.get(), stats.dropped.get()), (2, 3));
        let batch = queue.drain(10, Duration::ZERO);
        assert_eq!(batch.iter().map(|s| s.context.span_id.0[0]).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_drain_returns_once_it_has_a_full_batch() {
        let queue = SpanQueue::new(10, Arc::default());
        for n in 1..=5 {
            queue.push(span(n));
        }
        // A wait long enough to fail the test run if the drain waited it out.
        assert_eq!(queue.drain(3, Duration::from_secs(3600)).len(), 3);
        assert_eq!(queue.drain(3, Duration::ZERO).len(), 2);
    }

    #[test]
    fn wake_ends_a_waiting_drain() {
        let queue = Arc::new(SpanQueue::new(10, Arc::default()));
        let waiting = std::thread::spawn({
            let queue = queue.clone();
            move || queue.drain(10, Duration::from_secs(3600))
        });
        queue.push(span(1));
        queue.wake();
        assert_eq!(waiting.join().unwrap().len(), 1);
    }
}
