"""The rules `meshproxy capture` installs, as text (`--dry-run`): meshproxy's own table and
chains, the sidecar's uid and loopback left alone, exclusions before the redirect. The rules at
work in network namespaces: tests/integration/test_capture.py."""

from __future__ import annotations

import ipaddress

import pytest

from meshproxy.capture.rules import Capture, iptables_install, iptables_remove, nftables_install, nftables_remove
from meshproxy.cli import main

CAPTURE = Capture(uid=1337, app_ports=(8080, 9090), exclude_ports=(22,),
                  exclude_networks=(ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("fd00::/8")))


def test_nftables_rules_replace_meshproxys_table_and_only_it() -> None:
    script = nftables_install(CAPTURE)
    # Declared then deleted then written: one atomic transaction, whether or not it was there.
    assert script.startswith("table inet meshproxy\ndelete table inet meshproxy\ntable inet meshproxy {")
    output = script.split("chain output")[1].split("}")[0]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    assert lines[2:] == [
        "meta l4proto != tcp return",
        "meta skuid 1337 return",
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1/128 return",
        "ip daddr 10.9.0.0/16 return",
        "ip6 daddr fd00::/8 return",
        "tcp dport 22 return",
        "meta l4proto tcp redirect to :15002",
    ]
    assert "tcp dport { 8080, 9090 } redirect to :15006" in script
    assert nftables_remove() == "table inet meshproxy\ndelete table inet meshproxy\n"


def test_without_app_ports_nothing_inbound_is_captured() -> None:
    plain = Capture(uid=1337)
    assert "prerouting" not in nftables_install(plain)
    assert not any("PREROUTING" in " ".join(call) for call in iptables_install(plain, 4))


def test_iptables_rules_live_in_meshproxys_chains_with_one_jump_each() -> None:
    calls = [" ".join(call) for call in iptables_install(CAPTURE, 4)]
    assert calls == [
        "-t nat -N MESHPROXY_OUTPUT",
        "-t nat -A MESHPROXY_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-t nat -A MESHPROXY_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-t nat -A MESHPROXY_OUTPUT -d 10.9.0.0/16 -j RETURN",
        "-t nat -A MESHPROXY_OUTPUT -p tcp --dport 22 -j RETURN",
        "-t nat -A MESHPROXY_OUTPUT -p tcp -j REDIRECT --to-ports 15002",
        "-t nat -A OUTPUT -p tcp -j MESHPROXY_OUTPUT",
        "-t nat -N MESHPROXY_PREROUTING",
        "-t nat -A MESHPROXY_PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
        "-t nat -A MESHPROXY_PREROUTING -p tcp --dport 9090 -j REDIRECT --to-ports 15006",
        "-t nat -A PREROUTING -p tcp -j MESHPROXY_PREROUTING",
    ]
    # Each family gets its own networks.
    six = [" ".join(call) for call in iptables_install(CAPTURE, 6)]
    assert "-t nat -A MESHPROXY_OUTPUT -d fd00::/8 -j RETURN" in six
    assert not any("10.9.0.0/16" in call for call in six)
    removed = [" ".join(call) for call in iptables_remove()]
    assert "-t nat -D OUTPUT -p tcp -j MESHPROXY_OUTPUT" in removed
    assert removed[-1] == "-t nat -X MESHPROXY_PREROUTING"


def test_dry_run_prints_the_rules_and_installs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "--backend", "nftables", "--uid", "1337", "--app-port", "8080", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# nft -f - <<'EOF'\n") and "meta skuid 1337 return" in printed


def test_installing_needs_the_sidecars_uid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "--dry-run"]) == 2
    assert "--uid is required" in capsys.readouterr().err


def test_an_unknown_user_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["capture", "--uid", "no-such-user-here", "--dry-run"])
    assert "no user named 'no-such-user-here'" in capsys.readouterr().err
