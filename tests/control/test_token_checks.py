"""Join tokens as the control plane issues and checks them: each refusal names its reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from meshcontrol.store.sqlite import SqliteStore
from meshcontrol.tokens import TokenRefused, issue, verify
from meshproxy.mesh.join_token import JoinToken, secret_digest

PIN = "sha256:" + "ab" * 32
NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path)
    yield s
    s.close()


def test_an_issued_token_is_accepted_and_only_its_digest_is_stored(store: SqliteStore) -> None:
    token = issue(store, PIN, "orders", "shop", 3600, now=NOW)
    assert (token.service, token.namespace, token.ca_pin, token.expires) == ("orders", "shop", PIN, NOW + 3600)
    record = verify(store, token.encode() + "\n", NOW + 10)
    assert (record.id, record.service, record.namespace) == (token.id, "orders", "shop")
    assert record.digest == secret_digest(token.secret) != token.secret


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello", "not a join token: it should start with 'mpj1.'"),
        ("mpj1.???", "not a join token: its body is not base64url JSON"),
        (JoinToken("nope", "s", "orders", "shop", PIN, 2_000_000_000).encode(),
         "unknown join token nope: this control plane did not issue it"),
    ],
)
def test_what_is_not_a_token_of_this_control_plane_is_refused(store: SqliteStore, text: str, reason: str) -> None:
    with pytest.raises(TokenRefused) as refused:
        verify(store, text, NOW)
    assert str(refused.value).startswith(reason)


def test_a_wrong_secret_is_refused(store: SqliteStore) -> None:
    token = issue(store, PIN, "orders", "shop", 3600, now=NOW)
    with pytest.raises(TokenRefused, match=f"^join token {token.id}: wrong secret$"):
        verify(store, token._replace(secret="guess").encode(), NOW)


def test_a_token_rewritten_for_another_service_is_refused(store: SqliteStore) -> None:
    token = issue(store, PIN, "orders", "shop", 3600, now=NOW)
    with pytest.raises(TokenRefused, match="issued for service orders in namespace shop, but says payments in shop"):
        verify(store, token._replace(service="payments").encode(), NOW)


def test_an_expired_token_is_refused_saying_when(store: SqliteStore) -> None:
    token = issue(store, PIN, "orders", "shop", 60, now=NOW)
    with pytest.raises(TokenRefused) as refused:
        verify(store, token.encode(), NOW + 60 + 7200)
    assert str(refused.value) == (
        f"join token {token.id} expired at 2027-01-15T08:01:00Z (2h ago); make a new one with 'meshctl token create'"
    )


def test_a_revoked_token_is_refused(store: SqliteStore) -> None:
    token = issue(store, PIN, "orders", "shop", 3600, now=NOW)
    store.revoke_token(token.id)
    with pytest.raises(TokenRefused, match=f"^join token {token.id} was revoked"):
        verify(store, token.encode(), NOW)


def test_issue_refuses_bad_names_and_ttls(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="service 'Orders' is not a valid name"):
        issue(store, PIN, "Orders", "shop", 60)
    with pytest.raises(ValueError, match="ttl must be positive"):
        issue(store, PIN, "orders", "shop", 0)
    assert store.tokens() == []
