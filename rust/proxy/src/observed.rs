//! A response body on its way to the client: it carries its request's observation, finished
//! when the body ends, and for an upstream's response what that holds until then.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::body::Body;
use crate::breakers::Held;
use crate::endpoint::InFlightRequest;
use crate::observe::Observation;
use crate::pool::Lease;
use crate::timeouts::{ResponseTimer, StreamTimedOut};
use meshproxy_telemetry::Reason;

/// A response body on its way to the client, with the observation of its request: finished
/// when the body ends, fails, or is dropped unsent (the observation records itself on drop).
#[derive(Debug)]
pub struct Observed {
    body: Body,
    // Dropped in this order: the body, what the upstream's response held, the observation.
    upstream: Option<Upstream>,
    observation: Option<Observation>,
}

/// What a response from an upstream holds until its body ends: the endpoint's request stays in
/// flight, and an HTTP/1.1 connection (`lease`) goes back to the pool then.
#[derive(Debug)]
pub struct Upstream {
    pub in_flight: Option<InFlightRequest>,
    pub lease: Option<Box<Lease>>,
    /// The request's place under the cluster's circuit breakers' `max_requests`, if it has them.
    pub admitted: Option<Held>,
    /// What stops the body early, on routes with an `idle_timeout` or a `timeout` covering the
    /// whole response (`timeouts`); `None` on others, which pay nothing more.
    pub timer: Option<Box<ResponseTimer>>,
}

/// What a response body fails with: the upstream's error, or the route's timer's.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

// === impl Observed ===

impl Observed {
    /// The route's timer stopped the body (`expired`): a gRPC call past its deadline, between
    /// two messages, ends with its status in trailers, and the upstream's response (dropped) is
    /// reset; any other response fails, which resets the client's stream (`ResponseTimer::end`).
    #[cold]
    fn expire(&mut self, expired: StreamTimedOut) -> Result<Frame<Bytes>, BodyError> {
        if let Some(observation) = self.observation.as_mut() {
            observation.error = Some(Reason::Timeout);
        }
        let Some(timer) = self.upstream.as_ref().and_then(|upstream| upstream.timer.as_ref()) else {
            return Err(BodyError::from(expired));
        };
        if let (true, Some(observation)) = (timer.is_call_deadline(&expired), self.observation.as_mut()) {
            observation.grpc_status = Some(crate::grpc::code::DEADLINE_EXCEEDED);
        }
        let trailers = timer.end(expired)?;
        self.body = Body::Empty;
        self.upstream = None;
        Ok(Frame::trailers(trailers))
    }

    pub fn new(body: Body, observation: Observation, upstream: Option<Upstream>) -> Observed {
        Observed { body, upstream, observation: Some(observation) }
    }

    /// A body no request's observation goes with.
    pub fn unobserved(body: Body) -> Observed {
        Observed { body, upstream: None, observation: None }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        // A deadline that passed while the body kept coming (it is looked at below only when
        // the body has nothing): one flag read, on routes with a timer.
        let passed = this.upstream.as_mut().and_then(|upstream| upstream.timer.as_mut()).and_then(|timer| timer.passed());
        let polled = match passed {
            Some(expired) => Poll::Ready(Err(expired)),
            None => match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Ok(frame.map(|frame| frame.map_err(BodyError::from)))),
                // Nothing yet: the route's timer, if it has one, may stop the body.
                Poll::Pending => match this.upstream.as_mut().and_then(|upstream| upstream.timer.as_mut()) {
                    Some(timer) => timer.poll_expired(cx).map(Err),
                    None => Poll::Pending,
                },
            },
        };
        let frame = match std::task::ready!(polled) {
            Ok(frame) => frame,
            Err(expired) => Some(this.expire(expired)),
        };
        if let Some(upstream) = this.upstream.as_mut() {
            if let Some(timer) = upstream.timer.as_mut() {
                let data = frame.as_ref().and_then(|frame| frame.as_ref().ok()).and_then(Frame::data_ref);
                timer.moved(data.map(|data| &data[..]));
            }
            if frame.is_none() || frame.as_ref().is_some_and(Result::is_err) {
                upstream.in_flight.take();
                upstream.admitted.take();
            }
            // The end, or the last frame (whose consumer may not poll for the end when a
            // known length says it): the connection is done with this response.
            if frame.is_none() || this.body.is_end_stream() {
                drop(upstream.lease.take());
            }
        }
        match &frame {
            Some(Ok(frame)) => {
                if let Some(observation) = this.observation.as_mut() {
                    match frame.data_ref() {
                        Some(data) => observation.sent(data.len()),
                        // Trailers: a gRPC call's status is there.
                        None if observation.grpc => {
                            if let Some(trailers) = frame.trailers_ref() {
                                observation.grpc_status = crate::grpc::status(trailers);
                            }
                        }
                        None => {}
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use meshproxy_config::Direction;
    use meshproxy_telemetry::traffic::{TrafficKey, TrafficRegistry};

    /// Requests counted by code, from the registry's snapshot (one listener's unrouted stats).
    fn counted(registry: &TrafficRegistry) -> serde_json::Value {
        registry.json()["stats"][0]["responses"].clone()
    }

    fn observed(registry: &TrafficRegistry, body: Body) -> Observed {
        let mut observation = Observation::start(&registry.stats(TrafficKey { direction: Direction::Outbound, listener: "out".into(), route: "".into(), cluster: "".into() }));
        observation.status = Some(StatusCode::OK);
        Observed::new(body, observation, None)
    }

    #[tokio::test]
    async fn a_response_read_to_the_end_finishes_its_observation_there_and_only_there() {
        let registry = TrafficRegistry::default();
        let mut body = observed(&registry, Body::text("hello".into()));
        let first = body.frame().await.and_then(Result::ok).and_then(|f| f.into_data().ok());
        assert_eq!(first.as_deref(), Some(&b"hello"[..]));
        assert_eq!(counted(&registry), serde_json::json!({}), "not finished before the end");
        assert!(body.frame().await.is_none());
        assert_eq!(counted(&registry), serde_json::json!({"200": 1}));
        drop(body);
        assert_eq!(counted(&registry), serde_json::json!({"200": 1}), "dropping after the end records nothing more");
        assert_eq!(registry.json()["stats"][0]["response_bytes"], 5);
    }

    #[test]
    fn a_response_dropped_unsent_finishes_its_observation_once() {
        let registry = TrafficRegistry::default();
        drop(observed(&registry, Body::text("never sent".into())));
        assert_eq!(counted(&registry), serde_json::json!({"200": 1}));
        assert_eq!(registry.json()["stats"][0]["response_bytes"], 0);
    }
}
