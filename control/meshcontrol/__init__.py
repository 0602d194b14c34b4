"""The meshproxy control plane (``meshctl``): the registry of running instances with leases,
the policy store (SQLite, with every revision), the certificate authority, and the xDS server
that pushes each sidecar (meshproxy or Envoy) the config it needs.

    meshctl serve ──┬── store/      resources and revisions, tokens, the CA, the version counter
                    ├── ca.py       the CA: issues SPIFFE certificates on CSRs
                    ├── registry.py instances under leases
                    ├── xds/        per-client snapshots → ADS pushes, ACK/NACK per type
                    └── api.py      the HTTP API meshctl talks to
"""
