//! The one body type that flows through the proxy, both ways: a streamed body from a peer, a
//! short body the proxy generates, or nothing. Streamed bodies are never buffered whole; a
//! small request body a retry policy may send again is read whole first (`Replayed`).
//! Responses reach the client as `observed::Observed`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::grpc_retry::Kept;


#[derive(Debug)]
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    /// A body from a peer: a client's request, whose bytes are added to `received` as they go
    /// upstream, or an upstream's response.
    Streamed { body: Incoming, received: Option<Arc<AtomicU64>> },
    /// A request body read whole to be sent again by a retry (see `retry`), with its trailers
    /// (boxed: rare, and every request and response moves a `Body` several times).
    Replayed { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
    /// A gRPC call's body, copied as it streams for a retry (`grpc_retry`); boxed, as rare.
    Kept(Box<Kept>),
}

// === impl Body ===

impl Body {
    pub fn text(text: String) -> Body {
        Body::Full(Some(Bytes::from(text)))
    }

    /// The same body again, from its start, unless it streams.
    pub fn replay(&self) -> Option<Body> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Full(data) => Some(Body::Full(data.clone())),
            Body::Replayed { data, trailers } => Some(Body::Replayed { data: data.clone(), trailers: trailers.clone() }),
            // A request without a body arrives as an ended stream.
            Body::Streamed { body, .. } => http_body::Body::is_end_stream(body).then_some(Body::Empty),
            // Sent again from its copy (`grpc_retry::KeptCopy`), once it has ended.
            Body::Kept(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Replayed { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(*t))),
            }),
            Body::Streamed { body, received } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if let (Some(received), Some(Ok(data))) = (received, &frame) {
                    received.fetch_add(data.data_ref().map_or(0, |d| d.len() as u64), Relaxed);
                }
                Poll::Ready(frame)
            }
            Body::Kept(kept) => kept.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Replayed { data, trailers } => data.is_none() && trailers.is_none(),
            Body::Streamed { body, .. } => body.is_end_stream(),
            Body::Kept(kept) => kept.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) | Body::Replayed { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Streamed { body, .. } => body.size_hint(),
            Body::Kept(kept) => kept.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_replayed_body_gives_its_data_and_trailers_each_time() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = Body::Replayed { data: Some(Bytes::from_static(b"order 42")), trailers: Some(Box::new(trailers)) };
        for _ in 0..2 {
            let again = body.replay().map(|b| b.collect());
            let collected = match again {
                Some(collecting) => collecting.await.ok(),
                None => None,
            };
            let collected = collected.unwrap_or_else(|| panic!("a replayed body replays"));
            assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.as_bytes()), Some(&b"0"[..]));
            assert_eq!(collected.to_bytes(), Bytes::from_static(b"order 42"));
        }
        assert!(matches!(Body::Empty.replay(), Some(Body::Empty)));
    }
}
