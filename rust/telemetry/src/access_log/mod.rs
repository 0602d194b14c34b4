//! Access logs: one JSON line per request (or per sampled request), with the configured
//! fields, written off the request path by a writer thread per destination. Destinations
//! outlive config swaps: a reload that keeps `access_log.path` keeps its file and writer.

pub mod json;
pub mod sink;
pub mod time;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use meshproxy_config::{Field, Fields};
pub use sink::Sink;

use meshproxy_config as config;
use meshproxy_config::Problem;
use crate::stats::AccessLogStats;
use crate::record::Record;
use crate::sample::Sample;

/// The access log of a config: where lines go, which fields they carry, which share of
/// requests they cover.
#[derive(Debug)]
pub struct AccessLog {
    sink: Arc<Sink>,
    fields: Fields,
    sample: Sample,
}

/// The engine's open destinations, by path, and their writer threads.
#[derive(Debug, Default)]
pub struct Destinations {
    sinks: Mutex<HashMap<String, Weak<Sink>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

/// The config's settings, checked: fields and ratio, without opening anything.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub fields: Fields,
    pub sample: Sample,
}

// === impl AccessLog ===

impl AccessLog {
    /// Whether this request is written (the sampling draw).
    pub fn wants(&self) -> bool {
        self.sample.draw()
    }

    /// Queues the line; never blocks.
    pub fn write(&self, record: Arc<Record>) {
        self.sink.send(record, self.fields);
    }
}

/// Checks the `access_log` section: known fields, each once, and a ratio from 0 to 1.
pub fn settings(config: &config::AccessLog) -> Result<Settings, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut seen = Vec::with_capacity(config.fields.len());
    for (i, name) in config.fields.iter().enumerate() {
        match Field::parse(name) {
            Some(field) if seen.contains(&field) => {
                problems.push(Problem { path: format!("access_log.fields[{i}]"), message: format!("'{name}' is listed twice") });
            }
            Some(field) => seen.push(field),
            None => {
                let valid: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                problems.push(Problem {
                    path: format!("access_log.fields[{i}]"),
                    message: format!("'{name}' is not an access log field; valid fields: {}", valid.join(", ")),
                });
            }
        }
    }
    if config.fields.is_empty() {
        problems.push(Problem { path: "access_log.fields".into(), message: "name at least one field".into() });
    }
    let sample = Sample::new(config.sample).unwrap_or_else(|| {
        problems.push(Problem { path: "access_log.sample".into(), message: "must be from 0.0 to 1.0".into() });
        Sample::ALL
    });
    if config.path.is_empty() {
        problems.push(Problem { path: "access_log.path".into(), message: "must be 'stdout' or a file path".into() });
    }
    if problems.is_empty() {
        Ok(Settings { fields: seen.into_iter().collect(), sample })
    } else {
        Err(problems)
    }
}

/// A file destination whose folder does not exist (the file itself is created when missing).
pub fn folder_problem(destination: &str) -> Option<Problem> {
    if destination == sink::STDOUT {
        return None;
    }
    let folder = std::path::Path::new(destination).parent().filter(|f| !f.as_os_str().is_empty())?;
    (!folder.is_dir()).then(|| Problem {
        path: "access_log.path".into(),
        message: format!("cannot write '{destination}': the folder '{}' does not exist", folder.display()),
    })
}

// === impl Destinations ===

impl Destinations {
    /// The access log of a config: its destination's sink, reused when already open.
    pub fn access_log(&self, config: &config::AccessLog, stats: &Arc<AccessLogStats>) -> Result<AccessLog, Vec<Problem>> {
        let settings = settings(config)?;
        let sink = self.sink(&config.path, stats).map_err(|e| {
            vec![Problem { path: "access_log.path".into(), message: format!("cannot open '{}' for appending: {e}", config.path) }]
        })?;
        Ok(AccessLog { sink, fields: settings.fields, sample: settings.sample })
    }

    fn sink(&self, destination: &str, stats: &Arc<AccessLogStats>) -> std::io::Result<Arc<Sink>> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = sinks.get(destination).and_then(Weak::upgrade) {
            return Ok(sink);
        }
        let (sink, writer) = Sink::open(destination, stats.clone())?;
        let sink = Arc::new(sink);
        sinks.retain(|_, sink| sink.strong_count() > 0);
        sinks.insert(destination.to_string(), Arc::downgrade(&sink));
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        writers.retain(|writer| !writer.is_finished());
        writers.push(writer);
        Ok(sink)
    }

    /// Waits up to `limit` for every writer to write what its queue holds and end. Writers end
    /// once their last sink is dropped: call this after the listeners are gone.
    pub fn finish(&self, limit: Duration) {
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + limit;
        while writers.iter().any(|writer| !writer.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
