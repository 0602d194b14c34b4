"""The control plane's push latency (apply → every client ACKed the new routes), its memory per
connected client and its CPU per push, with real sidecars and with simulated ADS clients.

    .venv/bin/python bench/control/push_latency.py                 # 20 sidecars, then 500 simulated
    .venv/bin/python bench/control/push_latency.py --sidecars 0 --simulated 500 --pushes 30

Both runs start a real `meshctl serve`. The real run starts `meshproxy run --control` sidecars
(service `frontend`, calling `orders`), one orders instance, and times each apply of a changed
Route for `orders` until every sidecar's ACK of the new routes shows in `/v1/status`. The
simulated run opens N ADS streams from this one process (grpc.aio, each its own connection,
mTLS with a certificate from the control plane's CA), ACKs every response at once, and times
apply → the last client's ACK of the new routes, as the clients see it. RSS per client is the
control plane's RSS with the clients connected less its RSS before, over N; CPU per push is the
control plane's CPU time over the pushes, over their count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))

from mesh_documents import documents, service  # noqa: E402
from mesh_harness import LocalMesh, until  # noqa: E402
from upstreams import start_upstream  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ads_swarm import Swarm  # noqa: E402
from sidebyside.proc import cpu_seconds, rss_bytes  # noqa: E402

# frontend calls orders only: pushes of orders' Route reach every sidecar, and the sidecars
# (all frontend) do not follow one another's endpoints.
SERVICES = documents(service("frontend", calls=["orders"]), service("orders"))


def route(weight_v2: int) -> str:
    return f"""
kind: Route
service: orders
rules:
  - to: [{{version: v1, weight: {100 - weight_v2}}}, {{version: v2, weight: {weight_v2}}}]
"""


def process_figures(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds user+system) of the control plane's process."""
    return rss_bytes(pid) / 2**20, cpu_seconds(pid)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def summary(name: str, clients: int, latencies: list[float], rss_before: float, rss_after: float,
            cpu_s: float, pushes: int) -> dict[str, object]:
    row = {
        "run": name,
        "clients": clients,
        "pushes": pushes,
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "mib_per_client": round((rss_after - rss_before) / clients, 3),
        "cpu_ms_per_push": round(cpu_s * 1000 / pushes, 1),
    }
    print(f"{name}: {clients} clients, {pushes} pushes: apply -> all ACKed p50 {row['p50_ms']} ms, "
          f"p99 {row['p99_ms']} ms (max {row['max_ms']}); control plane RSS {rss_before:.1f} -> {rss_after:.1f} MiB "
          f"= {row['mib_per_client']} MiB per client; CPU {row['cpu_ms_per_push']} ms per push", flush=True)
    return row


def real_sidecars(folder: Path, count: int, pushes: int) -> dict[str, object]:
    orders = start_upstream("orders")
    frontend_app = start_upstream("frontend")
    try:
        with LocalMesh(folder / "real") as mesh:
            mesh.apply(documents(SERVICES, route(10)))
            assert mesh.server is not None
            pid = mesh.server.process.pid
            rss_before, _ = process_figures(pid)
            mesh.sidecar("orders", version="v1", app=orders.address)
            for _ in range(count):
                mesh.sidecar("frontend", app=frontend_app.address, wait=False)
            for sidecar in mesh.sidecars:
                sidecar.wait_ready(timeout=120)
            until(lambda: len([r for r in mesh.status() if r["connected"]]) == count + 1, timeout=120,
                  what="every sidecar to connect")
            mesh.wait_acked(timeout=60)
            rss_after, cpu_before = process_figures(pid)
            latencies = []
            api = f"http://{mesh.api}"
            with httpx.Client(timeout=30) as client:
                for push in range(pushes):
                    before = {r["node_id"]: r["types"]["routes"]["acked"] for r in mesh.status()
                              if r["service"] == "frontend"}
                    started = time.monotonic()
                    answer = client.post(f"{api}/v1/apply", content=route(20 + (push % 2) * 10),
                                         headers={"content-type": "application/yaml"})
                    answer.raise_for_status()
                    while True:
                        rows = [r for r in client.get(f"{api}/v1/status").json() if r["service"] == "frontend"]
                        if all(r["types"]["routes"]["acked"] not in (None, before[r["node_id"]])
                               and r["types"]["routes"]["acked"] == r["types"]["routes"]["sent"] for r in rows):
                            break
                        if time.monotonic() - started > 30:
                            raise TimeoutError("sidecars did not ACK within 30 s")
                        time.sleep(0.005)
                    latencies.append(time.monotonic() - started)
            _, cpu_after = process_figures(pid)
            return summary("real sidecars", count, latencies, rss_before, rss_after, cpu_after - cpu_before, pushes)
    finally:
        orders.stop()
        frontend_app.stop()


def simulated(folder: Path, count: int, pushes: int) -> dict[str, object]:
    with LocalMesh(folder / "simulated") as mesh:
        mesh.apply(documents(SERVICES, route(10)))
        assert mesh.server is not None
        pid = mesh.server.process.pid
        token = mesh.token("frontend").read_text().strip()
        rss_before, _ = process_figures(pid)
        swarm = Swarm(mesh.grpc, token, count, mesh.meshctl("ca", "bundle").stdout.encode())

        async def run() -> tuple[list[float], float, float, float]:
            await swarm.connect()
            await swarm.settled()
            await asyncio.sleep(1)
            rss_after, cpu_before = process_figures(pid)
            latencies = []
            async with httpx.AsyncClient(timeout=30) as client:
                for push in range(pushes):
                    started = time.monotonic()
                    waiting = swarm.expect_new_routes()
                    answer = await client.post(f"http://{mesh.api}/v1/apply", content=route(20 + (push % 2) * 10),
                                               headers={"content-type": "application/yaml"})
                    answer.raise_for_status()
                    last_ack = await asyncio.wait_for(waiting, timeout=60)
                    latencies.append(last_ack - started)
            _, cpu_after = process_figures(pid)
            await swarm.close()
            return latencies, rss_after, cpu_after - cpu_before, 0.0

        latencies, rss_after, cpu, _ = asyncio.run(run())
        return summary("simulated ADS clients", count, latencies, rss_before, rss_after, cpu, pushes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecars", type=int, default=20, help="real sidecars (0: skip)")
    parser.add_argument("--simulated", type=int, default=500, help="simulated ADS clients (0: skip)")
    parser.add_argument("--pushes", type=int, default=20, help="route changes to time in each run")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshproxy-push-") as folder:
        if args.sidecars:
            rows.append(real_sidecars(Path(folder), args.sidecars, args.pushes))
        if args.simulated:
            rows.append(simulated(Path(folder), args.simulated, args.pushes))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"control-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
