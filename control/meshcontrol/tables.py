"""How ``meshctl get``, ``status``, ``endpoints``, ``history`` and ``token list`` print: plain aligned
columns, one row per thing, ``-`` for nothing; every value a short summary (the whole of it is
in ``-o json`` or ``-o yaml``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

# xDS types in the order a sidecar applies them, as `meshctl status` shows them.
XDS_TYPES = ("listeners", "routes", "clusters", "endpoints", "secrets")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# === Resources ===


def services(resources: list[dict[str, Any]]) -> str:
    rows = [(r["namespace"], r["name"], r["protocol"], _tcp_port(r),
             "(its namespace)" if r["calls"] is None else r["calls"]) for r in resources]
    return table(("NAMESPACE", "NAME", "PROTOCOL", "PORT", "CALLS"), rows)


def _tcp_port(service: dict[str, Any]) -> str | None:
    """Where callers reach a tcp service on their sidecar's outbound address."""
    if service.get("port") is not None:
        return str(service["port"])
    if service.get("port_offset") is not None:
        return f"outbound+{service['port_offset']}"
    return None


def routes(resources: list[dict[str, Any]]) -> str:
    rows = [(r["namespace"], r["service"], " | ".join(_route_rule(rule) for rule in r["rules"])) for r in resources]
    return table(("NAMESPACE", "SERVICE", "RULES (first match wins)"), rows)


def _route_rule(rule: dict[str, Any]) -> str:
    match = rule["match"]
    conditions = [f"{k}={match[k]}" for k in ("path", "path_prefix", "path_regex") if match.get(k)]
    conditions += [f"{name}={_header(m)}" for name, m in (match.get("headers") or {}).items()]
    if match.get("method"):
        conditions.append("method=" + ",".join(match["method"]))
    to = ", ".join(f"{d['version']} {d['weight']}" if len(rule["to"]) > 1 else d["version"] for d in rule["to"])
    if rule.get("redirect"):
        to = f"redirect {rule['redirect']['status']}"
    elif rule.get("direct_response"):
        to = f"answer {rule['direct_response']['status']}"
    timeout = f" ({rule['timeout_ms']}ms)" if rule.get("timeout_ms", 15000) not in (15000, None) else ""
    keys = ",".join(f"{k}={v}" if k != "source_ip" else "source_ip" for h in rule.get("hash_policy") or ()
                    for k, v in h.items())
    return f"{' '.join(conditions) or '*'} -> {to}{timeout}" + (f" by {keys}" if keys else "")


def _header(match: dict[str, Any]) -> str:
    if "exact" in match:
        return str(match["exact"])
    if "regex" in match:
        return f"~{match['regex']}"
    return "(present)" if match.get("present") else "(absent)"


def policies(resources: list[dict[str, Any]]) -> str:
    rows = [(r["namespace"], r["service"], r["dry_run"], " | ".join(_policy_rule(rule) for rule in r["rules"]))
            for r in resources]
    return table(("NAMESPACE", "SERVICE", "DRY-RUN", "RULES"), rows)


def traffic_policies(resources: list[dict[str, Any]]) -> str:
    rows = [(r["namespace"], r["service"], r["lb"], _health_check(r["health_check"]),
             _outlier_detection(r["outlier_detection"]), _rate_limit(r.get("rate_limit"))) for r in resources]
    return table(("NAMESPACE", "SERVICE", "LB", "HEALTH CHECK", "OUTLIER DETECTION", "RATE LIMIT"), rows)


def _rate_limit(limit: dict[str, Any] | None) -> str | None:
    if limit is None:
        return None
    per_second = limit["requests_per_second"]
    return f"{per_second}/s, burst {limit.get('burst') or per_second}"


def _health_check(check: dict[str, Any] | None) -> str | None:
    if check is None:
        return None
    if check.get("http") is not None:
        what = f"http {check['http']['path']}"
    elif check.get("grpc") is not None:
        what = f"grpc {check['grpc']['service'] or '(server)'}"
    else:
        what = "tcp"
    return f"{what} every {_ms(check['interval_ms'])}"


def _outlier_detection(detection: dict[str, Any] | None) -> str | None:
    if detection is None:
        return None
    said = [f"5xx x{detection['consecutive_5xx']}"]
    if detection.get("consecutive_gateway_errors") is not None:
        said.append(f"gateway x{detection['consecutive_gateway_errors']}")
    if detection.get("success_rate") is not None:
        said.append("success rate")
    ejected = f"ejected {_ms(detection['base_ejection_time_ms'])}+, at most {detection['max_ejection_percent']}%"
    return f"{', '.join(said)}; {ejected}"


def _ms(ms: int) -> str:
    return f"{ms // 1000}s" if ms and ms % 1000 == 0 else f"{ms}ms"


def _policy_rule(rule: dict[str, Any]) -> str:
    # A header condition shows its header names; the list conditions show their entries.
    said = [f"{k} {','.join(v)}" for k, v in rule.items() if k not in ("name", "action") and v]
    return f"{rule['action']} {rule['name']}" + (f": {'; '.join(said)}" if said else "")


def mesh(resources: list[dict[str, Any]]) -> str:
    rows = [(r["trust_domain"], r["mtls"], f"{r['cert_lifetime_s']}s") for r in resources]
    return table(("TRUST DOMAIN", "MTLS", "CERT LIFETIME"), rows)


# === Live data ===


def instances(rows: list[dict[str, Any]]) -> str:
    return table(
        ("NAMESPACE", "SERVICE", "VERSION", "ADDRESS", "KIND", "CONNECTED"),
        [(r.get("namespace"), r.get("service"), r.get("version"), r.get("address"), r.get("kind"), r.get("connected"))
         for r in rows],
    )


def status(rows: list[dict[str, Any]]) -> str:
    """Per type ``sent/acked`` (one number when they agree), and every type's last NACK."""
    header = ("SERVICE", "NAMESPACE", "VERSION", "ADDRESS", "KIND", "CONNECTED", *(t.upper() for t in XDS_TYPES),
              "LAST NACK")
    out = []
    for r in rows:
        types = r.get("types") or {}
        cells = [_sent_acked(types.get(t) or {}) for t in XDS_TYPES]
        nacks = [f"{t}: {types[t]['nack']}" for t in XDS_TYPES if (types.get(t) or {}).get("nack")]
        out.append((r.get("service"), r.get("namespace"), r.get("version"), r.get("address"), r.get("kind"),
                    r.get("connected"), *cells, "; ".join(nacks)))
    return table(header, out)


def endpoints(rows: list[dict[str, Any]]) -> str:
    """Each sidecar's view of its endpoints; a sidecar that could not be read says why."""
    out: list[tuple[object, ...]] = []
    for r in rows:
        seen_by = f"{r['sidecar']}.{r['namespace']} {r['version']} {r['address']}"
        if r.get("error"):
            out.append((seen_by, None, None, r["error"], None, None))
            continue
        latency = r.get("latency_ewma_ms")
        out.append((seen_by, r["cluster"], r["endpoint"], r["health"], r["in_flight"],
                    None if latency is None else f"{latency:.1f}ms"))
    return table(("SIDECAR", "CLUSTER", "ENDPOINT", "HEALTH", "IN-FLIGHT", "LATENCY"), out)


def _sent_acked(state: dict[str, Any]) -> str:
    sent, acked = state.get("sent"), state.get("acked")
    if sent is None and acked is None:
        return "-"
    return str(sent) if sent == acked else f"{sent or '-'}/{acked or '-'}"


def history(revisions: list[dict[str, Any]], current: int) -> str:
    rows = [("*" if r["number"] == current else "", r["number"], when(r["time"]), r["message"]) for r in revisions]
    return table(("", "REVISION", "TIME", "CHANGE"), rows)


def tokens(records: list[dict[str, Any]]) -> str:
    rows = [(r["id"], r["service"], r["namespace"], when(r["created"]), when(r["expires"]),
             "revoked" if r["revoked"] else "expired" if r["expired"] else "valid") for r in records]
    return table(("ID", "SERVICE", "NAMESPACE", "CREATED", "EXPIRES", "STATE"), rows)
