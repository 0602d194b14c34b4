"""Checks that need the whole validated config: names that refer across sections, names and
addresses that must be unique, endpoint files that must be readable, and finally the engine's
own compile check.

Each check returns :class:`Finding`s (all of them, not just the first) so one run of the
loader reports every such problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter

from .. import _native
from ..addresses import IPAddress, parse_listen_address
from ..discovery.endpoints import EndpointListError, read_endpoint_file
from .errors import Path, parse_path
from .messages import Finding, duplicate_names, show
from .model import Config


def check_references(cfg: Config) -> list[Finding]:
    return _unique_names(cfg) + _unique_listen_addresses(cfg) + _known_clusters(cfg)


def _unique_names(cfg: Config) -> list[Finding]:
    return _duplicates("listener", [x.name for x in cfg.listeners]) + _duplicates(
        "cluster", [x.name for x in cfg.clusters]
    )


def _duplicates(section: str, names: list[str]) -> list[Finding]:
    return [Finding(at, message) for at, message in duplicate_names(section + "s", section, names)]


def _unique_listen_addresses(cfg: Config) -> list[Finding]:
    findings: list[Finding] = []
    taken: dict[tuple[IPAddress, int], int] = {}
    for i, listener in enumerate(cfg.listeners):
        key = parse_listen_address(listener.address)
        if key[1] == 0:
            continue  # each port-0 bind gets its own ephemeral port
        if key in taken:
            other = cfg.listeners[taken[key]]
            findings.append(
                Finding(
                    ("listeners", i, "address"),
                    f"listener {show(listener.name)} and listener {show(other.name)} "
                    f"(listeners[{taken[key]}]) both use address {listener.address}; "
                    "each listener needs its own address",
                )
            )
        else:
            taken[key] = i
    return findings


def _known_clusters(cfg: Config) -> list[Finding]:
    names = [c.name for c in cfg.clusters]
    known = set(names)
    defined = ", ".join(names) if names else "none"
    findings: list[Finding] = []
    for li, listener in enumerate(cfg.listeners):
        # A mesh has ten thousand routes, each usually naming a known cluster: that is seen
        # without a Python step per route.
        named = set(map(attrgetter("cluster"), listener.routes))
        named.discard(None)
        if named <= known and not any(map(attrgetter("split"), listener.routes)):
            continue
        for ri, route in enumerate(listener.routes):
            # Paths are built only for a route that names an unknown cluster: a mesh has ten
            # thousand routes and, usually, none of those.
            if route.cluster in known and route.split is None:
                continue
            at: Path = ("listeners", li, "routes", ri)
            refs: list[tuple[Path, str]] = [((*at, "cluster"), route.cluster)] if route.cluster is not None else []
            refs += [((*at, "split", si, "cluster"), w.cluster) for si, w in enumerate(route.split or [])]
            findings += [
                Finding(path, f"unknown cluster {show(name)}; defined clusters: {defined}")
                for path, name in refs
                if name not in known
            ]
    return findings


def check_endpoint_files(cfg: Config) -> list[Finding]:
    """Each endpoint file of a file source is read as the source will read it: a sidecar must
    not start (or reload) with a cluster whose file is missing or broken. Later, while it runs,
    a broken file is refused by the source and the last good list stays."""
    findings: list[Finding] = []
    for i, cluster in enumerate(cfg.clusters):
        if cluster.discovery is None or cluster.discovery.path is None:
            continue
        path = cluster.discovery.path
        try:
            read_endpoint_file(path)
        except OSError as error:
            findings.append(Finding(("clusters", i, "discovery", "path"),
                                    f"cannot read endpoint file {path}: {error.strerror or error}"))
        except EndpointListError as error:
            findings.append(Finding(("clusters", i, "discovery", "path"), f"endpoint file {path}: {error}"))
    return findings


def check_engine(cfg: Config) -> list[Finding]:
    """Ask the engine to compile the document without running it. Regexes are the main case:
    their syntax is the Rust regex crate's, which no Python library reproduces exactly."""
    return engine_findings(_native.check_config(cfg.engine_json()))


def engine_findings(problems: Iterable[tuple[str, str]]) -> list[Finding]:
    """The engine's ``(path, message)`` problems (from its check, or the ``ConfigRejected``
    of an apply) as findings."""
    return [Finding(parse_path(path), message) for path, message in problems]
