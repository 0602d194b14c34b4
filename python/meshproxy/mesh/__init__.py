"""A sidecar that follows the control plane (``meshproxy run --control``): joins the mesh with
a token, keeps its certificate renewed, and takes its config over xDS as one more source of
the config it runs.

    sidecar.py      the run: start (saved config, else join + base config), signals, Leave
    identity.py     join (Bundle, pin check, Certify with the token) and renewal (Certify, mTLS)
      keygen.py     the key and CSR, made by a short-lived child; pins.py: CA pins without X.509
    ads.py          the ADS stream: subscribe, batch, apply, ACK/NACK, reconnect with back-off
      xds_state.py  what the stream delivered per type, and the requests that answer it
    translate.py    Envoy resources -> a sidecar config (translate_routes.py, translate_rbac.py,
                    translate_health.py)
    apply.py        that config through the reload path (validator child, Proxy.reload)
    state.py        the state folder: credentials, last good config, the inbound address
    channel.py      TLS contexts and unary calls (grpclib)
    xds_messages.py the xDS messages as read (xds_pb2: a wire-compatible subset of Envoy's
                    schema, written by xds_subset.py)

The rules both sides must read alike live here once, and the control plane (``control/``)
imports them: the join token's form (:mod:`.join_token`), the names of the xDS resources and
the node metadata a sidecar registers with (:mod:`.names`), and the control plane's own gRPC
service (``mesh.proto``).
"""
