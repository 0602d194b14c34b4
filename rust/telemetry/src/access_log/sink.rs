//! Where access log lines go: a writer thread fed through a bounded queue. A worker hands over
//! the record as it is and never waits: when the queue is full the line is dropped and counted.
//! The writer formats the JSON, writes what has queued up in one go, and flushes whenever the
//! queue runs empty, so a quiet log is current and a busy one is written in large writes.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use meshproxy_config::Fields;
use super::json::write_line;
use crate::stats::AccessLogStats;
use crate::record::Record;

/// Lines waiting for the writer; beyond this, lines are dropped.
pub const QUEUE: usize = 16_384;
/// Bytes formatted before the writer writes them, even if more lines wait.
const BATCH: usize = 64 * 1024;

pub use meshproxy_config::STDOUT;

/// One queued line: the record and the fields to write.
struct Line {
    record: Arc<Record>,
    fields: Fields,
}

/// The sending side of one destination's writer. The writer thread ends, after writing every
/// line queued, once the last `Sink` of its destination is dropped.
#[derive(Debug)]
pub struct Sink {
    lines: SyncSender<Line>,
    stats: Arc<AccessLogStats>,
}

// === impl Sink ===

impl Sink {
    /// Opens `destination` (`stdout`, or a file appended to and created if missing) and starts
    /// its writer thread. Returns the thread too, for whoever waits for the last lines.
    pub fn open(destination: &str, stats: Arc<AccessLogStats>) -> std::io::Result<(Sink, JoinHandle<()>)> {
        let writer: Box<dyn Write + Send> = if destination == STDOUT {
            Box::new(std::io::stdout())
        } else {
            Box::new(OpenOptions::new().append(true).create(true).open(destination)?)
        };
        Sink::start(writer, QUEUE, stats)
    }

    /// A sink writing to `writer` through a queue of `capacity` lines.
    pub fn start(
        writer: Box<dyn Write + Send>,
        capacity: usize,
        stats: Arc<AccessLogStats>,
    ) -> std::io::Result<(Sink, JoinHandle<()>)> {
        let (lines, queued) = mpsc::sync_channel(capacity);
        let counted = stats.clone();
        let thread = std::thread::Builder::new()
            .name("meshproxy-access-log".into())
            .spawn(move || write_lines(queued, writer, &counted))?;
        Ok((Sink { lines, stats }, thread))
    }

    /// Queues a line; never blocks. A full queue drops the line and counts it.
    pub fn send(&self, record: Arc<Record>, fields: Fields) {
        match self.lines.try_send(Line { record, fields }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.stats.dropped.inc(),
        }
    }
}

/// The writer thread: until every sender is gone, format what is queued and write it.
fn write_lines(queued: Receiver<Line>, mut writer: Box<dyn Write + Send>, stats: &AccessLogStats) {
    let mut buffer = Vec::with_capacity(BATCH);
    while let Ok(first) = queued.recv() {
        let mut count = 1;
        write_line(&mut buffer, &first.record, first.fields);
        drop(first);
        while buffer.len() < BATCH {
            let Ok(line) = queued.try_recv() else { break };
            write_line(&mut buffer, &line.record, line.fields);
            count += 1;
        }
        match writer.write_all(&buffer).and_then(|()| writer.flush()) {
            Ok(()) => stats.lines.add(count),
            // A full disk or a closed stdout: the lines are lost, and counted as dropped.
            Err(_) => stats.dropped.add(count),
        }
        buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// A writer that blocks in its first write until released, and keeps what it is given.
    #[derive(Clone, Default)]
    struct Blocked {
        state: Arc<(Mutex<BlockedState>, Condvar)>,
    }

    #[derive(Default)]
    struct BlockedState {
        entered: bool,
        released: bool,
        written: Vec<u8>,
    }

    impl Blocked {
        fn wait_entered(&self) {
            let (lock, changed) = &*self.state;
            let mut state = lock.lock().unwrap();
            while !state.entered {
                state = changed.wait(state).unwrap();
            }
        }
        fn release(&self) {
            let (lock, changed) = &*self.state;
            lock.lock().unwrap().released = true;
            changed.notify_all();
        }
        fn written(&self) -> Vec<u8> {
            self.state.0.lock().unwrap().written.clone()
        }
    }

    impl Write for Blocked {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let (lock, changed) = &*self.state;
            let mut state = lock.lock().unwrap();
            state.entered = true;
            changed.notify_all();
            while !state.released {
                state = changed.wait(state).unwrap();
            }
            state.written.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(status: u16) -> Arc<Record> {
        Arc::new(Record::example(status))
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_without_blocking() {
        let writer = Blocked::default();
        let stats = Arc::new(AccessLogStats::default());
        let (sink, thread) = Sink::start(Box::new(writer.clone()), 2, stats.clone()).unwrap();
        let fields = [crate::access_log::Field::Status].into_iter().collect();
        // The first line is taken by the writer, which then blocks writing it.
        sink.send(record(201), fields);
        writer.wait_entered();
        // Two lines fill the queue; the next five find it full.
        sink.send(record(202), fields);
        sink.send(record(203), fields);
        for _ in 0..5 {
            sink.send(record(500), fields);
        }
        assert_eq!(stats.dropped.get(), 5);
        writer.release();
        drop(sink);
        thread.join().unwrap();
        let written = String::from_utf8(writer.written()).unwrap();
        assert_eq!(written, "{\"status\":201}\n{\"status\":202}\n{\"status\":203}\n");
        assert_eq!((stats.lines.get(), stats.dropped.get()), (3, 5));
    }

    #[test]
    fn lines_go_to_the_file_one_json_object_each() {
        let folder = std::env::temp_dir().join(format!("meshproxy-access-log-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("access.jsonl");
        let _ = std::fs::remove_file(&path);
        let stats = Arc::new(AccessLogStats::default());
        let (sink, thread) = Sink::open(path.to_str().unwrap(), stats.clone()).unwrap();
        for status in [200, 404] {
            sink.send(record(status), Fields::ALL);
        }
        drop(sink);
        thread.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let statuses: Vec<u64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, vec![200, 404]);
        assert_eq!(stats.lines.get(), 2);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
