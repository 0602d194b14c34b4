//! `read_endpoints`: a config's endpoint list handed to the engine's bulk reader
//! (`meshproxy_engine::config::endpoint_list`) without copying the Python strings it keeps.

use meshproxy_engine::config::endpoint_list::{CertainList, DEFAULT_WEIGHT};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

/// A read list: its addresses (the caller's own str objects), its weights, and the list as
/// the engine document writes it.
type Read<'py> = (Bound<'py, PyTuple>, Bound<'py, PyTuple>, String);

/// Reads a list of endpoint mappings the schema certainly accepts, or gives `None` for the
/// schema to validate it item by item.
#[pyfunction]
pub fn read_endpoints<'py>(items: &Bound<'py, PyAny>) -> PyResult<Option<Read<'py>>> {
    let Ok(list) = items.cast_exact::<PyList>() else { return Ok(None) };
    let mut addresses = Vec::with_capacity(list.len());
    let mut weights = Vec::with_capacity(list.len());
    let mut certain = CertainList::with_capacity(list.len());
    let names = (intern!(items.py(), "address"), intern!(items.py(), "weight"));
    for item in list.iter() {
        let Some((address, weight)) = read_item(&item, &names) else { return Ok(None) };
        let Ok(text) = address.to_str() else { return Ok(None) };
        if !certain.push(text, weight) {
            return Ok(None);
        }
        addresses.push(address);
        weights.push(weight);
    }
    let Some(document) = certain.finish() else { return Ok(None) };
    let py = items.py();
    Ok(Some((PyTuple::new(py, addresses)?, PyTuple::new(py, weights)?, document)))
}

/// `{"address": str, "weight": int}` (weight optional), exactly those types and keys.
/// `names` are the two keys, interned.
fn read_item<'py>(item: &Bound<'py, PyAny>, names: &(&Bound<'py, PyString>, &Bound<'py, PyString>)) -> Option<(Bound<'py, PyString>, i64)> {
    let dict = item.cast_exact::<PyDict>().ok()?;
    let address = dict.get_item(names.0).ok()??.cast_exact::<PyString>().ok()?.clone();
    let weight = match dict.get_item(names.1).ok()? {
        // Exactly int: bool is an int subclass, and the schema refuses it.
        Some(weight) => weight.cast_exact::<PyInt>().ok()?.extract::<i64>().ok()?,
        None if dict.len() == 1 => DEFAULT_WEIGHT,
        None => return None,
    };
    // Any key besides these two is one the schema refuses.
    (dict.len() <= 2).then_some((address, weight))
}
