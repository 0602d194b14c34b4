"""The xDS server: Envoy's aggregated discovery service (state of the world) for every kind of
mesh client, meshproxy sidecars and stock Envoy alike.

    build.py     one Envoy v3 resource per function (listeners, routes, clusters, endpoints, secrets)
    rbac.py      an AccessPolicy as RBAC http filters, in the shape the sidecar reads back
    cluster_policy.py  a TrafficPolicy as a cluster's lb_policy, health_checks, outlier_detection,
                 circuit_breakers (and a Route's retry budget)
    route_policy.py  a Route rule's retry as the route's retry_policy
    snapshot.py  what each client gets, shared between clients of the same service
    server.py    the ADS streams: ACK/NACK per type, debounced pushes of what changed
"""
