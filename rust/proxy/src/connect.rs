//! CONNECT tunnels, for clients told `HTTPS_PROXY=http://<listener>`: `CONNECT host:port`
//! matched by a route with `match: {connect: true}` (and `host`, `ports` to say which
//! destinations are allowed) opens a TCP connection to an endpoint of the route's cluster, and
//! the client's bytes (usually its own TLS) flow through it as they are. A CONNECT no route
//! matches is answered 403 `connect_denied`: a proxy that tunnels anywhere it is asked is an
//! open relay. As Envoy's `connect_matcher` with `upgrade_configs: CONNECT`; a tunnel to the
//! requested authority itself (Envoy's dynamic forward proxy) is not offered.

use std::time::Duration;

use http::{Response, StatusCode};

use crate::body::Body;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::observe::Observation;
use crate::observed::Upstream;
use crate::pool::{self, Connection, Dial};
use crate::upgrade::{Forwarded, Splice, Tunnel};

/// Opens the tunnel's TCP connection to an endpoint of the cluster (plain: the client's own
/// TLS goes through it), within the cluster's connect timeout, and answers the client `200`.
pub async fn open(cluster: &Cluster, tunnel: Box<Tunnel>, idle_timeout: Option<Duration>, observation: &mut Observation) -> Result<Forwarded, ProxyError> {
    let Tunnel::Connect { downstream } = *tunnel else {
        return Err(ProxyError::BadRequest("not a CONNECT"));
    };
    let members = cluster.members();
    let endpoint = members.pick_for(None, None).ok_or_else(|| ProxyError::NoHealthyEndpoint { cluster: cluster.name.to_string() })?;
    observation.note_upstream(&endpoint.address);
    cluster.stats.upstream_requests_total.inc();
    let in_flight = endpoint.start();
    let dial = Dial { tls: None, ..cluster.dial(endpoint) };
    let stream = match pool::dial(dial).await {
        Ok(Connection::Plain(stream)) => stream,
        // Not made: a dial without TLS settings makes a plain connection.
        Ok(Connection::Tls(_)) => return Err(ProxyError::BadRequest("a CONNECT tunnel is plain TCP")),
        Err(cause) => {
            cluster.stats.connect_failures_total.inc();
            return Err(ProxyError::ConnectFailure { cluster: cluster.name.to_string(), endpoint: endpoint.address.to_string(), cause: cause.to_string() });
        }
    };
    cluster.stats.tunnels_total.inc();
    let mut answer = Response::new(Body::Empty);
    *answer.status_mut() = StatusCode::OK;
    let upstream = Upstream { in_flight: Some(in_flight), lease: None, admitted: None, timer: None };
    Ok((answer, Some(upstream), Some(Box::new(Splice::connect(downstream, stream, idle_timeout)))))
}
