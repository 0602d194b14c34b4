"""A reload refused by the engine's own check (which a reload leaves to the engine's apply)
is reported as the loader reports its findings: file, line, path; the running config stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from conftest import Upstream, served_by
from meshproxy import ConfigError, Proxy


def routed_to(upstream: Upstream, path_regex: str | None = None) -> dict[str, Any]:
    match = {"path_regex": path_regex} if path_regex is not None else {}
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"match": match, "cluster": "app"}]}],
        "clusters": [{"name": "app", "endpoints": [{"address": upstream.address}]}],
    }


def test_a_reload_the_engine_refuses_names_the_file_line_and_path(
    upstreams: Callable[[str], Upstream], tmp_path: Path
) -> None:
    v1 = upstreams("v1")
    refused = tmp_path / "refused.yaml"
    # Look-ahead is Python regex syntax but not the engine's: only the engine can refuse it.
    refused.write_text(yaml.safe_dump(routed_to(v1, path_regex="/a(?=b)"), sort_keys=False))
    with Proxy(routed_to(v1)) as proxy:
        with pytest.raises(ConfigError) as caught:
            proxy.reload(refused)
        [issue] = caught.value.issues
        assert (issue.source, issue.path) == (str(refused), "listeners[0].routes[0].match.path_regex")
        assert issue.line is not None and "path_regex" in refused.read_text().splitlines()[issue.line - 1]
        assert issue.message.startswith("not a valid regular expression: look-around")

        with pytest.raises(ConfigError, match="^<dict>: listeners\\[0\\].routes\\[0\\].match.path_regex: "):
            proxy.reload(routed_to(v1, path_regex="/a(?=b)"))
        assert proxy.version == 1
        assert served_by(proxy.address("outbound")) == "v1"
