//! What the proxy reports about each request besides counters: the access log line and the
//! proxy's span. A config compiles into one [`Telemetry`], shared by its listeners; the request
//! path asks it to start a trace when a request arrives and hands it the [`Record`] when the
//! request is done. The queues and writers behind it belong to the engine ([`Outlets`]) and
//! outlive config swaps.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;

use crate::access_log::{self, AccessLog, Destinations};
use meshproxy_config::{self as config, Config};
use meshproxy_config::Problem;
use crate::stats::Stats;
use crate::trace::{self, FinishedSpan, Incoming, SpanQueue, Trace};

use crate::record::Record;
use crate::sample::Sample;

/// The telemetry of one config.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub access_log: Option<AccessLog>,
    pub tracing: Option<Tracing>,
}

/// Tracing as configured: the share of new traces recorded, and where finished spans go.
#[derive(Debug)]
pub struct Tracing {
    pub sample: Sample,
    spans: Arc<SpanQueue>,
}

/// Where telemetry goes, for the engine's lifetime: access log writers by destination, and
/// the span queue the exporter drains.
#[derive(Debug)]
pub struct Outlets {
    pub destinations: Destinations,
    pub spans: Arc<SpanQueue>,
    stats: Arc<Stats>,
}

// === impl Telemetry ===

impl Telemetry {
    /// Whether there is an access log or tracing: without, requests report nothing here.
    pub fn is_on(&self) -> bool {
        self.access_log.is_some() || self.tracing.is_some()
    }

    /// Starts the proxy's span of a request, with tracing on.
    pub fn start(&self, headers: &HeaderMap) -> Option<Trace> {
        self.tracing.as_ref().map(|tracing| Trace::start(headers, tracing.sample))
    }

    /// Whether a finished request needs its [`Record`]: its span is sampled, or the access log
    /// draws it. Draws once per request; `finish` must follow when this says yes.
    pub fn wants_record(&self, trace: Option<&Trace>) -> Wanted {
        Wanted {
            line: self.access_log.as_ref().is_some_and(AccessLog::wants),
            span: self.tracing.is_some() && trace.is_some_and(|t| t.span.sampled),
        }
    }

    /// The trace id a record names: the proxy span's, or with tracing off the caller's (read
    /// only when the access log is on).
    pub fn trace_id(&self, trace: Option<&Trace>, headers: &HeaderMap) -> Option<trace::TraceId> {
        match trace {
            Some(trace) => Some(trace.span.trace_id),
            None if self.access_log.is_some() => Incoming::read(headers).trace_id(),
            None => None,
        }
    }

    /// Hands the finished request to the access log and the span queue, as `wanted` said.
    pub fn finish(&self, record: Record, trace: Option<&Trace>, wanted: Wanted) {
        let record = Arc::new(record);
        if let (Some(tracing), Some(trace), true) = (&self.tracing, trace, wanted.span) {
            tracing.spans.push(FinishedSpan { context: trace.span, record: record.clone() });
        }
        if let (Some(access_log), true) = (&self.access_log, wanted.line) {
            access_log.write(record);
        }
    }
}

/// What a finished request is wanted for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub line: bool,
    pub span: bool,
}

impl Wanted {
    pub fn any(self) -> bool {
        self.line || self.span
    }
}

/// The problems of the config's `access_log` and `tracing` sections, opening nothing: an access
/// log file is only checked to have a folder to go in.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(access_log) = &config.access_log {
        problems.extend(access_log::settings(access_log).err().into_iter().flatten());
        problems.extend(access_log::folder_problem(&access_log.path));
    }
    if let Some(tracing) = &config.tracing {
        problems.extend(tracing_sample(tracing).err());
    }
    problems
}

fn tracing_sample(tracing: &config::Tracing) -> Result<Sample, Problem> {
    Sample::new(tracing.sample).ok_or_else(|| Problem { path: "tracing.sample".into(), message: "must be from 0.0 to 1.0".into() })
}

// === impl Outlets ===

impl Outlets {
    pub fn new(stats: Arc<Stats>) -> Outlets {
        let spans = Arc::new(SpanQueue::new(trace::export::QUEUE, stats.tracing.clone()));
        Outlets { destinations: Destinations::default(), spans, stats }
    }

    /// The telemetry of a config: opens its access log destination (or reuses it).
    pub fn telemetry(&self, config: &Config) -> Result<Telemetry, Vec<Problem>> {
        let mut problems = Vec::new();
        let access_log = match &config.access_log {
            Some(section) => match self.destinations.access_log(section, &self.stats.access_log) {
                Ok(access_log) => Some(access_log),
                Err(more) => {
                    problems.extend(more);
                    None
                }
            },
            None => None,
        };
        let tracing = match &config.tracing {
            Some(section) => match tracing_sample(section) {
                Ok(sample) => Some(Tracing { sample, spans: self.spans.clone() }),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
            None => None,
        };
        if problems.is_empty() {
            Ok(Telemetry { access_log, tracing })
        } else {
            Err(problems)
        }
    }

    /// Lets the access log writers write their last lines (after the listeners are gone).
    pub fn finish(&self, limit: Duration) {
        self.destinations.finish(limit);
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn config(extra: &str) -> Config {
        let doc = format!(r#"{{{extra} "listeners": [{{"name": "l", "address": "127.0.0.1:0"}}]}}"#);
        Config::from_json(&doc).unwrap()
    }

    #[test]
    fn a_finished_request_goes_to_the_log_and_its_sampled_span_to_the_queue() {
        let folder = std::env::temp_dir().join(format!("meshproxy-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("access.jsonl");
        let outlets = Outlets::new(Arc::default());
        let extra = format!(r#""access_log": {{"path": {:?}, "fields": ["status", "trace_id", "span_id"]}}, "tracing": {{"sample": 0.0}},"#, path);
        let telemetry = outlets.telemetry(&config(&extra)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let trace = telemetry.start(&headers);
        let wanted = telemetry.wants_record(trace.as_ref());
        assert_eq!(wanted, Wanted { line: true, span: true });
        let mut record = Record::example(200);
        record.trace_id = telemetry.trace_id(trace.as_ref(), &headers);
        record.span_id = trace.map(|t| t.span.span_id);
        telemetry.finish(record, trace.as_ref(), wanted);
        let spans = outlets.spans.drain(10, Duration::ZERO);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].context.parent.map(|p| p.to_string()).as_deref(), Some("00f067aa0ba902b7"));
        drop((telemetry, spans));
        outlets.finish(Duration::from_secs(60));
        let line = std::fs::read_to_string(&path).unwrap();
        let span_id = trace.map(|t| t.span.span_id.to_string()).unwrap();
        assert_eq!(line, format!("{{\"status\":200,\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"{span_id}\"}}\n"));
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn an_unsampled_trace_is_propagated_but_not_queued() {
        let outlets = Outlets::new(Arc::default());
        let telemetry = outlets.telemetry(&config(r#""tracing": {"sample": 0.0},"#)).unwrap();
        let trace = telemetry.start(&HeaderMap::new());
        assert!(trace.is_some_and(|t| !t.span.sampled));
        assert_eq!(telemetry.wants_record(trace.as_ref()), Wanted::default());
    }

    #[test]
    fn with_tracing_off_the_log_names_the_callers_trace() {
        let telemetry = Telemetry { access_log: None, tracing: None };
        let mut headers = HeaderMap::new();
        headers.insert("b3", HeaderValue::from_static("a3ce929d0e0e4736-e457b5a2e4d86bd1-1"));
        assert_eq!(telemetry.start(&headers), None);
        assert_eq!(telemetry.trace_id(None, &headers), None, "nothing is read without an access log");
    }

    #[test]
    fn bad_sections_are_reported_at_their_fields_without_opening_files() {
        let problems = check(&config(r#""access_log": {"path": "/nonexistent/dir/x.jsonl", "fields": ["status", "nope", "status"], "sample": 2.0}, "tracing": {"sample": -1},"#));
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["access_log.fields[1]", "access_log.fields[2]", "access_log.sample", "access_log.path", "tracing.sample"]);
        assert_eq!(problems[3].message, "cannot write '/nonexistent/dir/x.jsonl': the folder '/nonexistent/dir' does not exist");
        let outlets = Outlets::new(Arc::default());
        let opened = outlets.telemetry(&config(r#""access_log": {"path": "/nonexistent/dir/x.jsonl"},"#));
        let problems = opened.err().unwrap();
        assert_eq!(problems[0].path, "access_log.path");
        assert!(problems[0].message.starts_with("cannot open '/nonexistent/dir/x.jsonl' for appending"), "{}", problems[0].message);
    }
}
