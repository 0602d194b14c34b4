"""A real DNS server on loopback for discovery tests: Debian's dnsmasq, unprivileged, in the
foreground, answering only for ``mesh.test`` from a hosts file the test rewrites (SIGHUP makes
dnsmasq read it again) and from SRV records given at start."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.resolver
from upstreams import wait_until

DOMAIN = "mesh.test"


class Dnsmasq:
    def __init__(self, folder: Path, srv: Sequence[str] = (), host_records: Sequence[str] = ()) -> None:
        """``srv``: ``--srv-host`` values (``_http._tcp.orders.mesh.test,target,port,priority,weight``);
        ``host_records``: ``--host-record`` values (``name,ip``), fixed for the server's life."""
        self.hosts = folder / "dns-hosts"
        self.hosts.write_text("")
        self._log = folder / "dnsmasq.log"
        self._srv, self._host_records = srv, host_records
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> Dnsmasq:
        # dnsmasq binds the port itself: take a free one, and try again should another process
        # take it in between.
        for _attempt in range(5):
            port = _free_udp_port()
            with self._log.open("ab") as log:
                self.process = subprocess.Popen(self._command(port), stdout=subprocess.DEVNULL, stderr=log)
            self.address = f"127.0.0.1:{port}"
            process = self.process
            wait_until(lambda: process.poll() is not None or self._answers(), timeout=10,
                       what=f"dnsmasq on {self.address}")
            if process.poll() is None:
                return self
        raise RuntimeError(f"dnsmasq did not start:\n{self._log.read_text()}")

    def set_hosts(self, *lines: str) -> None:
        """Replaces the hosts file (``IP NAME`` lines) and has dnsmasq read it again."""
        self.hosts.write_text("".join(f"{line}\n" for line in lines))
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _command(self, port: int) -> list[str]:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        return [
            binary,
            "--no-daemon",            # foreground, and no change of user: runs as whoever starts it
            "--pid-file=",            # none: an unprivileged user cannot write /run
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",      # only that address: dnsmasqs of parallel tests do not clash
            "--no-resolv",            # nothing forwarded upstream
            "--no-hosts",             # not /etc/hosts
            f"--local=/{DOMAIN}/",    # names of mesh.test not listed: NXDOMAIN, not REFUSED
            f"--addn-hosts={self.hosts}",
            "--local-ttl=1",          # answers hold one second: changes show up quickly
            *(f"--srv-host={record}" for record in self._srv),
            *(f"--host-record={record}" for record in self._host_records),
        ]

    def _answers(self) -> bool:
        resolver = dns.resolver.Resolver(configure=False)
        host, port = self.address.rsplit(":", 1)
        resolver.nameservers, resolver.port, resolver.lifetime = [host], int(port), 0.5
        try:
            resolver.resolve(f"ready.{DOMAIN}", "A", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return True  # an answer: the server is up
        except dns.exception.DNSException:
            return False
        return True


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

