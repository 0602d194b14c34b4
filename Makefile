# meshproxy — `make help` lists the targets. `make demo` and `make test` set up everything they
# need on a fresh machine: Debian packages, the virtualenv, Python packages, the Rust build.

.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV      := .venv
PYTHON    := $(VENV)/bin/python
PYTEST    := $(VENV)/bin/pytest
MATURIN   := $(VENV)/bin/maturin
# Real clients the integration tests drive the proxy with, nginx as an h2c upstream, a
# Prometheus server that scrapes the sidecar's /metrics, and dnsmasq as the DNS server that
# endpoint discovery resolves names with; iptables, nftables and iproute2 (network namespaces)
# for transparent capture; redis-server and redis-cli as a real TCP peer; openssl s_server
# as the TLS server of CONNECT tunnels.
APT_PACKAGES := curl nghttp2-client nginx prometheus dnsmasq strace iptables nftables iproute2 redis-server redis-tools openssl
# locust lives in its own virtualenv: it brings gevent and a pytest plugin the tests must not see.
LOADTEST_VENV     := .venv-loadtest
LOADTEST_USERS    ?= 50
LOADTEST_SPAWN_RATE ?= 10
LOADTEST_DURATION ?= 30s
LOADTEST_USER_RPS ?= 10
# xds-protos ships its own, older copy of the OpenTelemetry protos under the same module names as
# opentelemetry-proto (no InstrumentationScope), and whichever is installed last wins: the span
# exporter needs opentelemetry-proto's, and nothing of meshproxy imports xds-protos' copy.
OTLP_PROTOS_AGAIN := $(VENV)/bin/pip install -q --force-reinstall --no-deps "opentelemetry-proto>=1.20"
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: system-deps
system-deps: ## install the Debian packages the tests use (curl, h2load, nginx, prometheus, dnsmasq, iptables, nftables)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/bin/activate:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "maturin>=1.8,<2"

.PHONY: build
build: $(VENV)/bin/activate ## build the engine in release mode into .venv, with the test dependencies and the control plane
	$(MATURIN) develop --release --extras test -q
	$(VENV)/bin/pip install -q -e control
	$(OTLP_PROTOS_AGAIN)

.PHONY: dev
dev: $(VENV)/bin/activate ## build the engine in debug mode into .venv (faster to rebuild)
	$(MATURIN) develop --extras test -q
	$(VENV)/bin/pip install -q -e control
	$(OTLP_PROTOS_AGAIN)

.PHONY: protos
protos: $(VENV)/bin/activate ## generate mesh_pb2.py from mesh.proto, and xds.proto + xds_pb2.py (the sidecar's subset of Envoy's xDS schema) in python/meshproxy/mesh (commit the result)
	cd python && ../$(PYTHON) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. meshproxy/mesh/mesh.proto
	cd python && ../$(PYTHON) -m meshproxy.mesh.xds_subset > meshproxy/mesh/xds.proto
	cd python && ../$(PYTHON) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. meshproxy/mesh/xds.proto

.PHONY: test
test: system-deps build ## run every test: Rust unit and property tests, then pytest (unit + integration)
	cargo test --workspace --quiet
	$(PYTEST)

.PHONY: demo
demo: build ## run a whole mesh on loopback: control plane, frontend, orders v1 (x2) and v2, payments; Ctrl-C stops it
	$(PYTHON) examples/demo.py

.PHONY: bench
bench: build ## side-by-side run against Envoy, HAProxy, nginx and a direct connection (installs them); BENCH_ARGS=--quick for a smoke run
	bench/install.sh
	$(PYTHON) bench/run.py $(BENCH_ARGS)

$(LOADTEST_VENV)/bin/locust: bench/loadtest/requirements.txt
	python3 -m venv $(LOADTEST_VENV)
	$(LOADTEST_VENV)/bin/pip install -q --upgrade pip
	$(LOADTEST_VENV)/bin/pip install -q -r bench/loadtest/requirements.txt
	touch $@

.PHONY: loadtest
loadtest: build $(LOADTEST_VENV)/bin/locust ## locust through the proxy on loopback; checks its counts against /stats (LOADTEST_USERS, _DURATION, …)
	$(PYTHON) bench/loadtest/run.py --locust $(LOADTEST_VENV)/bin/locust --users $(LOADTEST_USERS) \
		--spawn-rate $(LOADTEST_SPAWN_RATE) --duration $(LOADTEST_DURATION) --user-rps $(LOADTEST_USER_RPS)

.PHONY: microbench
microbench: build ## criterion benchmarks (LB pick, route lookup, snapshot compile), then the Python apply-path ones
	cargo bench -p meshproxy-balance -p meshproxy-engine
	$(PYTEST) bench/python -p no:cacheprovider --benchmark-columns=min,median,mean,max,rounds --benchmark-sort=name

.PHONY: docs
docs: ## write docs/config-reference.md from the config schema, and bench/README.md's table from bench/results/latest.json
	@# The schema needs the package importable; any build (make build or make dev) will do.
	@$(PYTHON) -c 'import meshproxy.config' 2>/dev/null || $(MAKE) build
	$(PYTHON) docs/generate_config_reference.py
	@if [ -f bench/results/latest.json ]; then $(PYTHON) bench/readme_table.py; \
	else echo "no bench/results/latest.json (make bench writes it): bench/README.md's table left as it is"; fi

.PHONY: lint
lint: build ## clippy on the Rust crates, mypy --strict on the Python package
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/mypy --strict python/meshproxy

.PHONY: clean
clean: ## remove build outputs and the virtualenvs
	cargo clean
	rm -rf $(VENV) $(LOADTEST_VENV) .pytest_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f python/meshproxy/*.so
