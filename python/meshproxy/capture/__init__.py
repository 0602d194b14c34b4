"""Transparent capture: the kernel rules that send an app's traffic through its sidecar without
the app being told (``meshproxy capture``). Outbound, the app's TCP connections are redirected to
the sidecar's capture listener, which reads where each was going (``original_destination:
true``) and routes by it; inbound, connections to the app's ports are redirected to the
sidecar's inbound listener. The sidecar's own connections are left alone, told apart by its uid.

``rules`` says what to install as nftables or iptables rules (pure, printed by ``--dry-run``);
``cli`` runs them.
"""
