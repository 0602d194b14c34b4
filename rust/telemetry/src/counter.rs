//! A counter the data path bumps with a relaxed atomic, and responses counted by status class.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

/// Responses counted by status class: 1xx … 5xx.
#[derive(Debug, Default)]
pub struct ByClass([Counter; 5]);

// === impl Counter ===

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl ByClass {
    pub fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5);
        self.0[class - 1].inc();
    }

    pub fn json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (i, counter) in self.0.iter().enumerate() {
            map.insert(format!("{}xx", i + 1), json!(counter.get()));
        }
        Value::Object(map)
    }
}
