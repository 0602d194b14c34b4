//! What lets a retry policy's gRPC conditions (`unavailable`, `cancelled`, ...) retry a call: a
//! gRPC request body announces no length, so it cannot be read whole before the first try (a
//! streaming call's client may wait for the response before it sends the rest). It is copied
//! as it streams upstream instead, and sent again when the try fails after the body ended
//! within `max_replay_bytes`, as Envoy does with its request buffer. A body that had not ended
//! (the upstream answered first), or grew past the limit, is not retried.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as _, Frame};
use hyper::body::Incoming;

/// A streamed request body copied as it goes; see the module's documentation.
#[derive(Debug)]
pub struct Kept {
    body: Incoming,
    received: Option<Arc<AtomicU64>>,
    copy: Arc<Mutex<Copy>>,
    limit: u64,
}

/// The copy, shared by the body on its way and the retry loop.
#[derive(Debug, Clone)]
pub struct KeptCopy(Arc<Mutex<Copy>>);

#[derive(Debug, Default)]
struct Copy {
    data: BytesMut,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// Over the limit, or broken: not sent again.
    spoilt: bool,
}

/// A streamed body, kept as it goes up to `limit` bytes, and its copy.
pub fn keep(body: Incoming, received: Option<Arc<AtomicU64>>, limit: u64) -> (Kept, KeptCopy) {
    let copy = Arc::new(Mutex::new(Copy::default()));
    (Kept { body, received, copy: copy.clone(), limit }, KeptCopy(copy))
}

// === impl KeptCopy ===

impl KeptCopy {
    /// The body's data and trailers, if the whole body went by within the limit.
    pub fn again(&self) -> Option<(Option<Bytes>, Option<Box<HeaderMap>>)> {
        let copy = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !copy.ended || copy.spoilt {
            return None;
        }
        let data = (!copy.data.is_empty()).then(|| Bytes::copy_from_slice(&copy.data));
        Some((data, copy.trailers.clone().map(Box::new)))
    }
}

// === impl Kept ===

impl Kept {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        let mut copy = self.copy.lock().unwrap_or_else(|p| p.into_inner());
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(received) = &self.received {
                        received.fetch_add(data.len() as u64, Relaxed);
                    }
                    if copy.data.len() as u64 + data.len() as u64 > self.limit {
                        copy.spoilt = true;
                        copy.data = BytesMut::new();
                    } else if !copy.spoilt {
                        copy.data.extend_from_slice(data);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    copy.trailers = Some(trailers.clone());
                }
                // The sender may stop polling once the body says it has ended.
                copy.ended |= self.body.is_end_stream();
            }
            None => copy.ended = true,
            Some(Err(_)) => copy.spoilt = true,
        }
        Poll::Ready(frame)
    }

    pub fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.body)
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }
}
