"""`make demo`: a whole mesh on loopback, no Kubernetes, as the README's "Run a mesh" shows it.

The control plane (`meshctl serve`), then five apps, each with its own sidecar joined by a token:
frontend, orders v1 (two instances) and v2, and payments, in the namespace `shop`. It applies
examples/mesh.yaml (a 90/10 canary and an `x-channel: beta` test channel for orders; a policy
that lets only frontend read orders), sends traffic through frontend's sidecar, prints what it
saw (the split, the test channel, a denied call, an instance killed and gone from the endpoints
within its lease), the `meshctl status` table, and keeps running until Ctrl-C.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
MESH_YAML = Path(__file__).with_name("mesh.yaml")
GRPC, API = "127.0.0.1:15010", "127.0.0.1:15080"
LEASE_S = 5
NAMESPACE = "shop"
# name, service, version, app address, outbound listener, admin
INSTANCES = [
    ("frontend", "frontend", "v1", "127.0.0.1:8080", "127.0.0.1:15001", "127.0.0.1:15000"),
    ("orders-v1-a", "orders", "v1", "127.0.0.1:8081", "127.0.0.1:15101", "127.0.0.1:15100"),
    ("orders-v1-b", "orders", "v1", "127.0.0.1:8082", "127.0.0.1:15201", "127.0.0.1:15200"),
    ("orders-v2", "orders", "v2", "127.0.0.1:8083", "127.0.0.1:15301", "127.0.0.1:15300"),
    ("payments", "payments", "v1", "127.0.0.1:8084", "127.0.0.1:15401", "127.0.0.1:15400"),
]
REQUESTS = 2000


def serve_app(service: str, version: str, address: str) -> ThreadingHTTPServer:
    """One app instance: answers who it is, and which mesh identity called it."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"service": service, "version": version, "instance": address,
                               "caller": self.headers.get("x-meshproxy-peer-identity")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a sidecar killed mid-request (the demo does it) resets its connection

    host, port = address.rsplit(":", 1)
    server = Server((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def meshctl(*args: str, input: str | None = None) -> str:
    result = subprocess.run([str(BIN / "meshctl"), "--server", f"http://{API}", *args], input=input,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"demo: meshctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def call(outbound: str, host: str, *, method: str = "GET", headers: dict[str, str] | None = None,
         connection: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, object]]:
    own = connection is None
    if connection is None:
        h, p = outbound.rsplit(":", 1)
        connection = http.client.HTTPConnection(h, int(p), timeout=10)
    try:
        connection.request(method, "/orders", headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, {"body": body.decode(errors="replace").strip(),
                                     "error": response.getheader("x-meshproxy-error")}
    finally:
        if own:
            connection.close()


def wait(condition: object, what: str, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if condition():  # type: ignore[operator]
                return time.monotonic() - started
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"demo: timed out waiting for {what}")


def get(address: str, path: str) -> tuple[int, bytes]:
    response = httpx.get(f"http://{address}{path}", timeout=5)
    return response.status_code, response.content


def answers(address: str) -> bool:
    """Whether something listens on ``address``."""
    h, p = address.rsplit(":", 1)
    try:
        with socket.create_connection((h, int(p)), timeout=0.5):
            return True
    except OSError:
        return False


def endpoints(admin: str, cluster: str) -> list[str]:
    clusters = json.loads(get(admin, "/clusters")[1])
    return sorted(e["address"] for e in clusters.get(cluster, {}).get("endpoints", []))


class Load:
    """frontend calling orders back to back on one connection, counting what fails."""

    def __init__(self, outbound: str) -> None:
        self.outbound = outbound
        self.sent = 0
        self.failed: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        h, p = self.outbound.rsplit(":", 1)
        connection = http.client.HTTPConnection(h, int(p), timeout=10)
        while not self._stop.is_set():
            try:
                status, answer = call(self.outbound, "orders", connection=connection)
                if status != 200:
                    self.failed[f"{status} {answer.get('error')}"] += 1
            except (OSError, http.client.HTTPException) as error:
                self.failed[type(error).__name__] += 1
                connection.close()
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
    children: list[subprocess.Popen[bytes]] = []
    logs = workdir / "logs"
    logs.mkdir()

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as log:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        children.append(child)
        return child

    taken = [address for address in (GRPC, API, *(i[4] for i in INSTANCES), *(i[5] for i in INSTANCES))
             if answers(address)]
    if taken:
        print(f"demo: {', '.join(taken)} already in use (another demo, or a meshctl serve, still running?)",
              file=sys.stderr)
        return 1
    try:
        apps = [serve_app(service, version, app) for _, service, version, app, _, _ in INSTANCES]
    except OSError as error:
        print(f"demo: cannot start the demo apps on 127.0.0.1:8080-8084: {error}", file=sys.stderr)
        return 1
    try:
        return demo(workdir, start, children)
    finally:
        # Whatever ended the demo (Ctrl-C, a failure), nothing it started outlives it.
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        for app in apps:
            app.shutdown()


def demo(workdir: Path, start: Callable[[str, list[str]], subprocess.Popen[bytes]],
         children: list[subprocess.Popen[bytes]]) -> int:
    print(f"demo folder: {workdir} (control plane data, tokens, sidecar state, logs/)")
    start("meshctl-serve", [str(BIN / "meshctl"), "serve", "--data", str(workdir / "mesh"), "--grpc", GRPC,
                            "--api", API, "--lease", f"{LEASE_S}s"])
    wait(lambda: get(API, "/ready")[0] == 200, "the control plane")
    print(f"control plane: xDS + CA on {GRPC}, API on http://{API}/  (lease {LEASE_S}s)")
    print(meshctl("apply", "-f", str(MESH_YAML)).rstrip())

    sidecars = {}
    for name, service, version, app, outbound, admin in INSTANCES:
        token = workdir / f"{name}.token"
        token.write_text(meshctl("token", "create", "--service", service, "--namespace", NAMESPACE))
        start(name, [str(BIN / "meshproxy"), "run", "--control", GRPC, "--token-file", str(token),
                     "--service", service, "--namespace", NAMESPACE, "--version", version, "--app", app,
                     "--inbound", "127.0.0.1:0", "--outbound", outbound, "--admin", admin,
                     "--state-dir", str(workdir / "state" / name), "--drain-timeout", "3"])
        sidecars[name] = (outbound, admin)
    for name, (_, admin) in sidecars.items():
        subprocess.run([str(BIN / "meshproxy"), "wait-ready", "--admin", admin, "--timeout", "60"], check=True)
    frontend, frontend_admin = sidecars["frontend"]
    wait(lambda: len(endpoints(frontend_admin, "outbound_orders.shop_v1")) == 2
         and len(endpoints(frontend_admin, "outbound_orders.shop_v2")) == 1, "frontend to see every orders instance")
    print(f"5 sidecars joined by token; frontend's sidecar: outbound {frontend}, admin http://{frontend_admin}/")

    versions: Counter[str] = Counter()
    h, p = frontend.rsplit(":", 1)
    connection = http.client.HTTPConnection(h, int(p), timeout=10)
    for _ in range(REQUESTS):
        status, answer = call(frontend, "orders", connection=connection)
        versions[str(answer.get("version")) if status == 200 else f"status {status}"] += 1
    print(f"\nfrontend -> orders, {REQUESTS} requests (Route: v1 90 / v2 10):")
    for version, n in sorted(versions.items()):
        print(f"  {version}: {n:5d}  ({100 * n / REQUESTS:.1f}%)")
    beta = Counter(str(call(frontend, "orders", headers={"x-channel": "beta"}, connection=connection)[1].get("version"))
                   for _ in range(100))
    print(f"frontend -> orders with x-channel: beta, 100 requests: {dict(beta)}")
    status, answer = call(frontend, "orders", connection=connection)
    print(f"orders saw the caller as {answer.get('caller')}")
    status, answer = call(sidecars["payments"][0], "orders")
    print(f"payments -> orders: {status} {answer.get('error')} (AccessPolicy: only frontend may GET orders)")
    status, answer = call(frontend, "orders", method="POST")
    print(f"frontend -> orders POST: {status} {answer.get('error')}")
    connection.close()

    victim = next(c for c, (name, *_rest) in zip(children[1:], INSTANCES) if name == "orders-v1-b")
    load = Load(frontend)
    time.sleep(1)
    victim.kill()
    victim.wait()
    took = wait(lambda: len(endpoints(frontend_admin, "outbound_orders.shop_v1")) == 1, "the killed instance to leave",
                timeout=LEASE_S * 3)
    time.sleep(1)
    load.stop()
    print(f"\nkill -9 of orders-v1-b's sidecar under steady load: gone from frontend's endpoints {took:.1f}s later "
          f"(lease {LEASE_S}s); {load.sent} requests meanwhile, failed: {dict(load.failed) or 0}")
    print("  (a request in flight on the killed sidecar is lost with it; the ones it refused until its lease ran "
          "out were retried on orders-v1-a)")

    print("\nmeshctl status:")
    print(meshctl("status").rstrip())
    print(f"\ntry:  curl -H 'Host: orders' http://{frontend}/           (frontend's sidecar)")
    print(f"      curl -H 'Host: orders' -H 'x-channel: beta' http://{frontend}/")
    print(f"      .venv/bin/meshctl get instances ; .venv/bin/meshctl history")
    print("running until Ctrl-C")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
    print("\nstopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
