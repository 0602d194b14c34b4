"""A sidecar that follows the control plane (``meshproxy run --control``): joins the mesh with
a token, keeps its certificate renewed, and takes its config over xDS as one more source of
the config it runs.

The rules both sides must read alike live here once, and the control plane (``control/``)
imports them: the join token's form (:mod:`.join_token`), the names of the xDS resources and
the node metadata a sidecar registers with (:mod:`.names`), and the control plane's own gRPC
service (``mesh.proto``).
"""
