"""SPIFFE IDs: what the spec accepts, what it refuses (with the message that says why), and a
seeded random search checking the parser against an independent statement of the rules."""

from __future__ import annotations

import random
import re

import pytest
from meshproxy.spiffe import SpiffeId, parse_spiffe_id, parse_trust_domain

VALID: list[tuple[str, str, str, str | None, str | None]] = [
    # text, trust domain, path, namespace, service account
    ("spiffe://mesh.local/ns/shop/sa/web", "mesh.local", "/ns/shop/sa/web", "shop", "web"),
    ("spiffe://mesh.local", "mesh.local", "", None, None),
    ("spiffe://example.org/workload", "example.org", "/workload", None, None),
    ("spiffe://a_b-c.9/Upper/CASE/ok", "a_b-c.9", "/Upper/CASE/ok", None, None),
    ("spiffe://td/ns/x/sa/y/extra", "td", "/ns/x/sa/y/extra", None, None),
    ("spiffe://td/ns/x/sa", "td", "/ns/x/sa", None, None),
    ("spiffe://td/...", "td", "/...", None, None),  # only '.' and '..' are dot segments
    ("spiffe://td/.hidden/a..b", "td", "/.hidden/a..b", None, None),
]

INVALID: list[tuple[str, str]] = [
    ("", "it must start with 'spiffe://' followed by a trust domain"),
    ("mesh.local/ns/a/sa/b", "it must start with 'spiffe://'"),
    ("https://mesh.local/x", "it must start with 'spiffe://'"),
    ("spiffe:/mesh.local/x", "it must start with 'spiffe://'"),
    ("SPIFFE://mesh.local/x", "the scheme must be written in lowercase: 'spiffe://'"),
    ("Spiffe://mesh.local/x", "the scheme must be written in lowercase"),
    ("spiffe://", "the trust domain is empty; it needs at least one of lowercase letters a-z"),
    ("spiffe:///ns/a", "the trust domain is empty"),
    ("spiffe://Mesh.local/x", ("the trust domain contains 'M'; it may use only lowercase letters a-z, digits 0-9, "
                              "'.', '-' and '_'")),
    ("spiffe://mesh local/x", "the trust domain contains ' '"),
    ("spiffe://m%65sh/x", "the trust domain contains '%'"),
    ("spiffe://mésh/x", "the trust domain contains 'é'"),
    ("spiffe://mesh.local:8443/x", "it must not have a port (':...') after the trust domain"),
    ("spiffe://user@mesh.local/x", "it must not have userinfo ('...@') before the trust domain"),
    ("spiffe://mesh.local/x?a=b", "it must not have a query ('?...')"),
    ("spiffe://mesh.local/x#frag", "it must not have a fragment ('#...')"),
    ("spiffe://mesh.local?x", "it must not have a query"),
    ("spiffe://mesh.local/", "the path must not end with '/'; remove the trailing '/'"),
    ("spiffe://mesh.local/ns/a/", "the path must not end with '/'"),
    ("spiffe://mesh.local//ns", "the path must not have empty segments ('//')"),
    ("spiffe://mesh.local/ns//a", "the path must not have empty segments"),
    ("spiffe://mesh.local/./a", "the path must not have '.' segments"),
    ("spiffe://mesh.local/a/..", "the path must not have '..' segments"),
    ("spiffe://mesh.local/a b", ("the path segment 'a b' contains ' '; path segments may use only letters A-Z and "
                                "a-z, digits 0-9, '.', '-' and '_'")),
    ("spiffe://mesh.local/a%20b", "the path segment 'a%20b' contains '%'"),
    ("spiffe://mesh.local/caf\u00e9", "the path segment 'café' contains 'é'"),
    ("spiffe://mesh.local/a:b", "the path segment 'a:b' contains ':'"),
    ("spiffe://mesh.local/a\nb", "the path segment 'a\\nb' contains '\\n'"),
]


@pytest.mark.parametrize(("text", "trust_domain", "path", "namespace", "service_account"), VALID)
def test_a_valid_id_parses_into_its_parts_and_prints_back_unchanged(
    text: str, trust_domain: str, path: str, namespace: str | None, service_account: str | None
) -> None:
    identity = parse_spiffe_id(text)
    assert identity == SpiffeId(trust_domain, path)
    assert (identity.namespace, identity.service_account) == (namespace, service_account)
    assert str(identity) == text


@pytest.mark.parametrize(("text", "problem"), INVALID)
def test_an_invalid_id_is_refused_with_one_line_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_spiffe_id(text)
    message = str(refused.value)
    assert message.startswith(f"{text!r} is not a valid SPIFFE ID: "), message
    assert problem in message
    assert "\n" not in message


def test_an_id_may_be_2048_bytes_long_and_no_longer() -> None:
    prefix = "spiffe://mesh.local/"
    longest = prefix + "a" * (2048 - len(prefix))
    assert str(parse_spiffe_id(longest)) == longest
    with pytest.raises(ValueError, match=r"it is 2049 bytes long; at most 2048 are allowed"):
        parse_spiffe_id(longest + "a")


def test_a_trust_domain_may_be_255_characters_long_and_no_longer() -> None:
    assert parse_spiffe_id("spiffe://" + "t" * 255 + "/x").trust_domain == "t" * 255
    with pytest.raises(ValueError, match=r"the trust domain is 256 characters long; at most 255 are allowed"):
        parse_spiffe_id("spiffe://" + "t" * 256 + "/x")


def test_a_long_refused_id_is_shortened_in_the_message() -> None:
    with pytest.raises(ValueError) as refused:
        parse_spiffe_id("spiffe://mesh.local/" + "a" * 1000 + "/ b")
    assert len(str(refused.value)) < 400


@pytest.mark.parametrize("text", ["mesh.local", "a", "example-org_1.internal", "0.0"])
def test_a_valid_trust_domain_is_returned_unchanged(text: str) -> None:
    assert parse_trust_domain(text) == text


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the trust domain is empty"),
    ("Mesh", "the trust domain contains 'M'; it may use only lowercase letters a-z, digits 0-9, '.', '-' and '_'"),
    ("mesh.local/ns", "the trust domain contains '/'"),
    ("spiffe://mesh.local", "give the trust domain alone, without 'spiffe://': 'mesh.local'"),
])
def test_an_invalid_trust_domain_is_refused_saying_what_is_allowed(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_trust_domain(text)
    message = str(refused.value)
    assert message.startswith(f"{text!r} is not a valid trust domain: ") and problem in message, message


# --- random search ----------------------------------------------------------------------------

# The rules restated independently of the parser: one regex plus the two limits and dot segments.
_RULES = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)", re.ASCII)
_INTERESTING = "abzAZ09.-_/:@?#% é\x00\n"


def _follows_the_rules(text: str) -> bool:
    match = _RULES.fullmatch(text)
    if match is None or len(text.encode()) > 2048 or len(match[1]) > 255:
        return False
    return not any(segment in (".", "..") for segment in match[2].split("/")[1:])


def _random_candidate(rng: random.Random) -> str:
    """Mostly ``spiffe://`` plus a few segments of interesting characters, so both outcomes
    come up often; sometimes a damaged scheme."""
    scheme = rng.choice(["spiffe://"] * 8 + ["SPIFFE://", "spiffe:/", "spiffe:", ""])
    segments = ["".join(rng.choice(_INTERESTING) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.5:
        # Keep to the safe characters now and then: otherwise almost nothing would be valid.
        segments = [segment.translate({ord(c): "a" for c in " é\x00\n:@?#%"}) for segment in segments]
    return scheme + "/".join(segments)


def test_random_strings_parse_exactly_when_they_follow_the_rules_and_round_trip() -> None:
    rng = random.Random(20240601)
    outcomes = {True: 0, False: 0}
    for _ in range(2000):
        text = _random_candidate(rng)
        expected = _follows_the_rules(text)
        try:
            identity = parse_spiffe_id(text)
        except ValueError as refusal:
            assert not expected, f"{text!r} follows the rules but was refused: {refusal}"
            message = str(refusal)
            assert message.startswith(f"{text!r} is not a valid SPIFFE ID: ") and "\n" not in message, message
        else:
            assert expected, f"{text!r} breaks the rules but parsed as {identity!r}"
            assert str(identity) == text
            assert parse_spiffe_id(str(identity)) == identity
        outcomes[expected] += 1
    # The search is only worth something if it explores both sides.
    assert outcomes[True] > 200 and outcomes[False] > 200, outcomes
