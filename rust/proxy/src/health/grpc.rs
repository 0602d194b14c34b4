//! The messages of `grpc.health.v1.Health/Check`, encoded with prost, and gRPC's message framing.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is the `ServingStatus` enum (an int32 on the
/// wire).
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// The request for `service`, as one length-prefixed gRPC message (uncompressed).
pub fn request(service: &str) -> Bytes {
    let message = HealthCheckRequest { service: service.to_string() };
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    // Writing into a buffer with the room reserved cannot fail.
    let _ = message.encode(&mut framed);
    framed.freeze()
}

/// The serving status in a response body of one length-prefixed message.
pub fn serving_status(body: &[u8]) -> Result<i32, String> {
    let [compressed, a, b, c, d, message @ ..] = body else { return Err("the response has no message".into()) };
    if *compressed != 0 {
        return Err("the response message is compressed".into());
    }
    let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    let message = message.get(..length).ok_or("the response message is cut short")?;
    HealthCheckResponse::decode(message).map(|r| r.status).map_err(|e| format!("the response message is not a HealthCheckResponse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_frames_the_service_and_a_response_gives_its_status() {
        assert_eq!(&request("orders")[..], b"\0\0\0\0\x08\x0a\x06orders");
        assert_eq!(&request("")[..], b"\0\0\0\0\0");
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x01"), Ok(SERVING));
        assert_eq!(serving_status(b"\0\0\0\0\0"), Ok(0));
        assert!(serving_status(b"\0\0\0\0\x05\x08").is_err());
    }
}
