"""Capture settings on loopback, without the kernel rules (those: test_capture.py, as root): a
connection made to a capture listener itself has no original destination, so routes matching
one do not match it and a passthrough cluster has nowhere to send it."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import ProxyProcess


def test_a_connection_that_was_not_redirected_has_no_original_destination(meshproxy_run: Any) -> None:
    proxy: ProxyProcess = meshproxy_run({
        "listeners": [{
            "name": "capture-out",
            "address": "127.0.0.1:0",
            "original_destination": True,
            "routes": [
                {"match": {"original_destination": ["0.0.0.0/0", "::/0"], "path_prefix": "/captured"},
                 "cluster": "passthrough"},
                {"match": {"path_prefix": "/any"}, "cluster": "passthrough"},
            ],
        }],
        "clusters": [{"name": "passthrough", "original_destination": True}],
    })
    address = proxy.address("capture-out")
    with httpx.Client(timeout=10) as client:
        # Every destination would match, but this connection has none: no route.
        unmatched = client.get(f"http://{address}/captured")
        assert (unmatched.status_code, unmatched.headers["x-meshproxy-error"]) == (404, "no_route")
        # Routed to the passthrough cluster, it has nowhere to go.
        nowhere = client.get(f"http://{address}/any")
        assert (nowhere.status_code, nowhere.headers["x-meshproxy-error"]) == (503, "no_healthy_endpoint")
