"""One DNS resolution of a cluster's name into endpoints (dnspython), and how long it holds.

- ``A`` / ``AAAA``: every address of the name, at the configured port, weight 1.
- ``SRV``: the records of the lowest priority (RFC 2782: the others are for when those fail,
  and the balancer already steers around failing endpoints), each target's addresses at the
  record's port and weight. When every weight of that priority is 0, all are weight 1 (RFC
  2782: weight 0 then means "no preference"); otherwise a weight-0 record gets weight 0,
  configured but never picked. Targets come from the answer's additional section when the
  server sent them, else from an A query (AAAA when the target has no A record).

A name the DNS says does not exist (NXDOMAIN) or has no records of the type is an answer: the
cluster has no endpoints. A DNS that does not answer (timeout, SERVFAIL, REFUSED, no resolver
configured) is :class:`Unavailable`: the last list stays.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from .endpoints import MAX_WEIGHT, Endpoint

if TYPE_CHECKING:
    from .dns_source import DnsSettings

# Per resolution, all servers and retries included. Bounds how long a sidecar waits at start
# for a DNS that does not answer, and how long stopping a source may take.
QUERY_LIFETIME = 3.0


class Answer(NamedTuple):
    endpoints: tuple[Endpoint, ...]
    ttl: float
    """Seconds the DNS says the answer holds (the shortest TTL of the records used)."""


class Unavailable(Exception):
    """The DNS gave no answer to go by; the message says why."""


def resolver_for(settings: DnsSettings) -> dns.resolver.Resolver:
    """The system's resolver (its /etc/resolv.conf), or the one the settings name."""
    try:
        resolver = dns.resolver.Resolver(configure=settings.resolver is None)
    except dns.exception.DNSException as error:  # no /etc/resolv.conf, or an unreadable one
        raise Unavailable(f"no system resolver: {error}") from None
    if settings.resolver is not None:
        resolver.nameservers, resolver.port = [settings.resolver[0]], settings.resolver[1]
    resolver.lifetime = QUERY_LIFETIME
    return resolver


def resolve(resolver: dns.resolver.Resolver, settings: DnsSettings) -> Answer:
    # The system resolver's search domains apply as they would for getaddrinfo; a resolver
    # named in the config has none.
    search = settings.resolver is None
    try:
        answer = resolver.resolve(settings.name, settings.record, search=search, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Answer((), 0.0)
    except dns.exception.DNSException as error:
        raise Unavailable(_reason(error)) from None
    ttl = max(0.0, answer.expiration - time.time())
    if answer.rrset is None:
        return Answer((), ttl)
    if settings.record == "SRV":
        return _services(resolver, answer, ttl)
    assert settings.port is not None  # the schema requires one for A and AAAA
    endpoints = {Endpoint(_address(rdata.address, settings.port), 1) for rdata in answer}
    return Answer(tuple(sorted(endpoints)), ttl)


def _services(resolver: dns.resolver.Resolver, answer: dns.resolver.Answer, ttl: float) -> Answer:
    # A target of "." says the service is not offered there.
    records = [record for record in answer if record.target != dns.name.root]
    if not records:
        return Answer((), ttl)
    best = min(record.priority for record in records)
    chosen = [record for record in records if record.priority == best]
    no_preference = all(record.weight == 0 for record in chosen)
    weights: dict[str, int] = {}
    for record in chosen:
        addresses, address_ttl = _target_addresses(resolver, answer, record.target)
        ttl = min(ttl, address_ttl)
        weight = 1 if no_preference else record.weight
        for address in addresses:
            key = _address(address, record.port)
            # Two records naming one address and port: one endpoint with both shares.
            weights[key] = min(MAX_WEIGHT, weights.get(key, 0) + weight)
    return Answer(tuple(Endpoint(address, weight) for address, weight in sorted(weights.items())), ttl)


def _target_addresses(
    resolver: dns.resolver.Resolver, answer: dns.resolver.Answer, target: dns.name.Name
) -> tuple[list[str], float]:
    """The addresses of one SRV target, and for how long they hold."""
    response = answer.response
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        rrset = response.get_rrset(response.additional, target, dns.rdataclass.IN, rdtype)
        if rrset is not None:
            return [rdata.address for rdata in rrset], float(rrset.ttl)
    for record in ("A", "AAAA"):
        try:
            found = resolver.resolve(target, record, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return [], 0.0
        except dns.exception.DNSException as error:
            raise Unavailable(f"target {target}: {_reason(error)}") from None
        if found.rrset is not None:
            return [rdata.address for rdata in found], max(0.0, found.expiration - time.time())
    return [], 0.0


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _reason(error: dns.exception.DNSException) -> str:
    if isinstance(error, dns.exception.Timeout):
        return f"no answer in {QUERY_LIFETIME:g}s"
    return str(error) or type(error).__name__
