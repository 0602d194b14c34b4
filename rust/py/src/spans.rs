//! Finished spans as Python receives them from `Engine.drain_spans`: plain tuples, built in one
//! call per batch, for `meshproxy.tracing` to encode as OTLP.

use meshproxy_engine::span_attributes::{self as attributes, Value};
use meshproxy_engine::FinishedSpan;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// `(trace_id, span_id, parent_span_id, name, start_ns, end_ns, attributes, error_type)`;
/// `parent_span_id` is empty for a span that started its trace, `error_type` is None for a span
/// that did not fail.
pub type SpanTuple<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    String,
    u64,
    u64,
    Vec<(&'static str, Bound<'py, PyAny>)>,
    Option<String>,
);

pub fn to_python<'py>(py: Python<'py>, span: &FinishedSpan) -> PyResult<SpanTuple<'py>> {
    let context = &span.context;
    let record = &span.record;
    let parent: Vec<u8> = context.parent.map(|p| p.0.to_vec()).unwrap_or_default();
    let (start, end) = attributes::times(record);
    let mut attrs = Vec::new();
    for (key, value) in attributes::attributes(record) {
        let value = match value {
            Value::Str(text) => text.into_pyobject(py)?.into_any(),
            Value::Int(number) => number.into_pyobject(py)?.into_any(),
        };
        attrs.push((key, value));
    }
    Ok((
        PyBytes::new(py, &context.trace_id.0),
        PyBytes::new(py, &context.span_id.0),
        PyBytes::new(py, &parent),
        attributes::name(record),
        start,
        end,
        attrs,
        attributes::error_type(record),
    ))
}
