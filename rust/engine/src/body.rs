//! The one body type that flows through the proxy, both ways: a streamed body from a peer, a
//! short body the proxy generates, or nothing. Streamed bodies are never buffered whole.
//! Responses reach the client as `Observed`: the body carries the observation of its request
//! and finishes it when it ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::endpoint::InFlightRequest;
use crate::observe::Observation;
use crate::pool::Lease;

#[derive(Debug)]
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    /// A request body from the client; its bytes are added to `received` as they go upstream.
    Streamed { body: Incoming, received: Option<Arc<AtomicU64>> },
    /// An upstream response: the endpoint's request stays in flight until this body ends, and
    /// an HTTP/1.1 connection (`lease`) goes back to the pool then.
    Upstream { body: Incoming, in_flight: Option<InFlightRequest>, lease: Option<Box<Lease>> },
}

/// A response body on its way to the client, with the observation of its request: finished
/// when the body ends, fails, or is dropped unsent (the observation records itself on drop).
#[derive(Debug)]
pub struct Observed {
    body: Body,
    observation: Option<Observation>,
}

// === impl Body ===

impl Body {
    pub fn text(text: String) -> Body {
        Body::Full(Some(Bytes::from(text)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Streamed { body, received } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if let (Some(received), Some(Ok(data))) = (received, &frame) {
                    received.fetch_add(data.data_ref().map_or(0, |d| d.len() as u64), Relaxed);
                }
                Poll::Ready(frame)
            }
            Body::Upstream { body, in_flight, lease } => {
                let frame = std::task::ready!(Pin::new(&mut *body).poll_frame(cx));
                if frame.is_none() || frame.as_ref().is_some_and(Result::is_err) {
                    in_flight.take();
                }
                // The end, or the last frame (whose consumer may not poll for the end when a
                // known length says it): the connection is done with this response.
                if frame.is_none() || body.is_end_stream() {
                    drop(lease.take());
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Streamed { body, .. } | Body::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Streamed { body, .. } | Body::Upstream { body, .. } => body.size_hint(),
        }
    }
}

// === impl Observed ===

impl Observed {
    pub fn new(body: Body, observation: Observation) -> Observed {
        Observed { body, observation: Some(observation) }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(observation), Some(data)) = (this.observation.as_mut(), frame.data_ref()) {
                    observation.sent(data.len());
                }
            }
            // The end, or a failure that ends it: the response is as sent as it will be.
            None | Some(Err(_)) => drop(this.observation.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
