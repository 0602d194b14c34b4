"""`make loadtest`: locust drives a real mesh on loopback; its counts are checked against /stats.

1. starts three `orders` upstreams and `meshproxy run` in front of them (mesh.py), and waits
   until the admin API's /ready answers;
2. reads /stats, runs locust headless (bench/locustfile.py) against the listener for a fixed
   duration, reads /stats again once locust has exited;
3. prints locust's totals beside the proxy's counter deltas (compare.py) and writes locust's
   CSV and HTML report, the logs and summary.json to bench/results/loadtest/<UTC timestamp>/;
4. stops the proxy (SIGTERM) and the upstreams, also on failure.

Exits 0 only when locust saw no failure and both sides counted the same requests and failures.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compare import compare, proxy_delta, render
from locust_totals import read_locust_totals
from mesh import LISTENER, Mesh, admin_get

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "bench" / "locustfile.py"


def main() -> int:
    args = _parser().parse_args()
    # SIGTERM unwinds like Ctrl-C, so the mesh and locust are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out = args.results / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True)
    pace = f"{args.user_rps:g} req/s each" if args.user_rps > 0 else "no pause"
    print(
        f"loadtest: {args.users} users at {pace} (spawn {args.spawn_rate:g}/s) for {args.duration}; output in {out}",
        flush=True,
    )

    with Mesh(args.meshproxy, out, workers=args.workers) as mesh:
        print(
            f"loadtest: meshproxy listener {LISTENER} on {mesh.listener_address}, admin on {mesh.admin_address}",
            flush=True,
        )
        before = _stats(mesh.admin_address)
        locust_status = _run_locust(args, mesh.listener_address, out)
        after = _stats(mesh.admin_address)
    proxy_status = mesh.proxy_exit_status
    if not (out / "locust.json").exists():
        print(
            f"loadtest: locust exited with status {locust_status} and wrote no stats; see {out / 'locust.log'}",
            file=sys.stderr,
        )
        return 1

    locust = read_locust_totals(out / "locust.json", out / "locust_failures.csv")
    result = compare(locust, proxy_delta(before, after, LISTENER))
    if locust_status not in (0, 1):  # 1: locust saw failures, which the comparison reports
        result.mismatches.append(
            f"locust exited with status {locust_status} (see {out / 'locust.log'})"
        )
    if proxy_status != 0:
        result.mismatches.append(
            f"meshproxy exited with status {proxy_status} after SIGTERM (see {out / 'meshproxy.log'})"
        )
    print("\nloadtest: locust vs the proxy's /stats (after minus before)")
    print(render(result))
    summary = {
        "settings": {
            "users": args.users,
            "spawn_rate": args.spawn_rate,
            "duration": args.duration,
            "user_rps": args.user_rps,
            "workers": args.workers,
        },
        "locust": asdict(result.locust),
        "proxy": asdict(result.proxy),
        "mismatches": result.mismatches,
        "ok": result.ok,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nloadtest: report {out / 'locust.html'}, summary {out / 'summary.json'}")
    return 0 if result.ok else 1


def _parser() -> argparse.ArgumentParser:
    bin_dir = Path(sys.executable).parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--users", type=int, default=50, help="concurrent locust users (default: 50)"
    )
    parser.add_argument(
        "--spawn-rate", type=float, default=10, help="users started a second (default: 10)"
    )
    parser.add_argument(
        "--duration", default="30s", help="locust's run time: 30s, 2m, 1h (default: 30s)"
    )
    parser.add_argument(
        "--user-rps",
        type=float,
        default=10,
        help="requests a second per user; 0 = no pause (default: 10)",
    )
    parser.add_argument(
        "--workers", type=int, help="meshproxy's engine threads (default: one per core)"
    )
    parser.add_argument(
        "--locust",
        type=Path,
        default=ROOT / ".venv-loadtest" / "bin" / "locust",
        help="the locust command",
    )
    parser.add_argument(
        "--meshproxy", type=Path, default=bin_dir / "meshproxy", help="the meshproxy command"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "results" / "loadtest",
        help="where each run's directory goes",
    )
    return parser


def _run_locust(args: argparse.Namespace, listener: str, out: Path) -> int:
    command = [
        str(args.locust),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        f"http://{listener}",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        args.duration,
        # At the end of the run each user finishes the request it is in: none is cut off after
        # the proxy counted it, so the two sides' counts can be compared exactly.
        "--stop-timeout",
        "10s",
        "--user-rps",
        str(args.user_rps),
        # The final counts: the CSV misses the end of the run (see locust_totals.py).
        "--json-file",
        str(out / "locust"),
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--logfile",
        str(out / "locust.log"),
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        return process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait()


def _stats(admin: str) -> dict[str, Any]:
    status, body = admin_get(admin, "/stats")
    if status != 200:
        raise RuntimeError(f"GET http://{admin}/stats answered {status}")
    stats: dict[str, Any] = json.loads(body)
    return stats


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("loadtest: interrupted; the mesh is stopped", file=sys.stderr)
        sys.exit(130)
