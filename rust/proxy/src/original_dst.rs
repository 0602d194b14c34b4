//! Transparent capture, the connection's side: where a connection redirected to a capture
//! listener (`original_destination: true`) was going, read once when it is accepted
//! (`SO_ORIGINAL_DST`, from the kernel's connection tracking). Routes match on it
//! (`route::RouteMatch::destination`). Listeners without the option never read it.
//!
//! Left for the opaque TCP listeners: a cluster that sends to the original destination itself
//! (Envoy's `ORIGINAL_DST` cluster, for passthrough of traffic no route claims) takes the same
//! address from here.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination the client dialled, if a NAT rule (`REDIRECT`) sent the connection here;
/// `None` for a connection made to the listener itself (the kernel then reports the listener's
/// own address, or has no record of the connection).
pub fn of(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let socket = socket2::SockRef::from(stream);
    let found = if local.is_ipv4() { socket.original_dst_v4() } else { socket.original_dst_v6() };
    let found = found.ok()?.as_socket()?;
    (found != local).then_some(found)
}
