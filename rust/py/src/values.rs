//! The config's value rules (`meshproxy_engine::config::values`) as Python calls them: a refused value
//! raises ValueError with the problem, which the caller prefixes with the value as it quotes it.

use meshproxy_engine::config::address;
use meshproxy_engine::config::values::{self, DurationInput, Grain};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

fn refused(problem: String) -> PyErr {
    PyValueError::new_err(problem)
}

/// A duration's length in seconds, from text with a unit (`250ms`) or a number of seconds;
/// `fine` also takes microseconds (`300us`).
#[pyfunction]
#[pyo3(signature = (value, fine=false))]
pub fn parse_duration(value: &Bound<'_, PyAny>, fine: bool) -> PyResult<f64> {
    let grain = if fine { Grain::Micros } else { Grain::Millis };
    // bool is an int subclass; `timeout: yes` is a typo, not one second.
    if value.is_instance_of::<PyBool>() {
        return Err(refused(grain.expected().to_owned()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return values::duration(DurationInput::Text(text.to_str()?), grain).map_err(refused);
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        // As float(value): an int too large for a double raises OverflowError.
        return values::duration(DurationInput::Seconds(value.extract()?), grain).map_err(refused);
    }
    Err(refused(grain.expected().to_owned()))
}

/// `busy_poll` in microseconds, at most 10ms.
#[pyfunction]
pub fn check_busy_poll(micros: u64) -> PyResult<u64> {
    values::busy_poll(micros).map_err(refused)
}

/// A duration in microseconds that must not be zero; `field` names it in the message.
#[pyfunction]
pub fn check_positive_duration(field: &str, micros: u64) -> PyResult<u64> {
    values::positive_duration(field, micros).map_err(refused)
}

/// A SPIFFE ID as `(trust_domain, path)`.
#[pyfunction]
pub fn parse_spiffe_id(text: &str) -> PyResult<(String, String)> {
    let id = values::spiffe_id(text).map_err(refused)?;
    Ok((id.trust_domain().to_owned(), id.path().to_owned()))
}

/// A trust domain given alone, unchanged.
#[pyfunction]
pub fn check_trust_domain(name: &str) -> PyResult<()> {
    values::trust_domain(name).map(drop).map_err(refused)
}

/// A listener's `IP:PORT` as `(ip, port)`, the IP in canonical form (IPv6 without brackets).
#[pyfunction]
pub fn parse_listen_address(text: &str) -> PyResult<(String, u16)> {
    let address = address::listen(text).map_err(refused)?;
    Ok((address.ip().to_string(), address.port()))
}

/// An endpoint's `HOST:PORT` as `(host, port)`, the host as two spellings of one address
/// compare: an IP in canonical form (IPv6 in brackets), a DNS name lowercased without its
/// trailing dot.
#[pyfunction]
pub fn parse_endpoint_address(text: &str) -> PyResult<(String, u16)> {
    let address = address::endpoint(text).map_err(refused)?;
    Ok((address.host, address.port))
}

/// One entry of a route's `match.original_destination`: an address, a network or `*:PORT`.
#[pyfunction]
pub fn check_original_destination(text: &str) -> PyResult<()> {
    meshproxy_engine::config::capture::destination(text).map(drop).map_err(refused)
}
