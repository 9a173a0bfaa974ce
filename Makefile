# Palisade — the commands a newcomer needs: `make demo` and `make test`.
#
# Caches live outside the checkout (PALISADE_CACHE, default ~/.cache/palisade): the
# control-plane binaries, the Cargo target dir, component logs, `make up` state.

SHELL := /bin/bash
PALISADE_CACHE ?= $(HOME)/.cache/palisade
CARGO_TARGET_DIR ?= $(PALISADE_CACHE)/target
export PALISADE_CACHE CARGO_TARGET_DIR
CARGO ?= cargo
CLUSTER := $(CARGO) run --quiet -p palisade-e2e --bin palisade-cluster --

.PHONY: help test lint fmt fuzz controlplane up down env crds bench bench-profile bench-sched sidecar-pgo demo eval-detection plugin

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

test: lint controlplane ## The one test command: format, lints, unit + end-to-end tests.
	python3 -m unittest discover -s bench -p 'test_*.py'
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets --no-fail-fast
	$(CARGO) test --workspace --doc

# cargo deny's version: installed from crates.io by `make lint` when missing (once, ~6 min).
CARGO_DENY_VERSION := 0.20.2

lint: ## cargo fmt --check, clippy with warnings as errors, cargo deny (licenses, bans, sources).
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@bash scripts/cargo-tool.sh cargo-deny $(CARGO_DENY_VERSION)
	$(CARGO) deny check --hide-inclusion-graph licenses bans sources

FUZZ_SECONDS ?= 60
export FUZZ_SECONDS
fuzz: ## Run every fuzz target for FUZZ_SECONDS (default 60) from the seeds in fuzz/corpus; make test replays the seeds.
	@bash scripts/fuzz.sh

fmt: ## Format the workspace.
	$(CARGO) fmt --all

controlplane: ## Build etcd, kube-apiserver, kube-controller-manager, kubectl, helm (cached).
	@bash tests/e2e/controlplane/build.sh >/dev/null

up: controlplane ## Start a persistent local control plane and print its KUBECONFIG.
	@$(CLUSTER) up

down: ## Stop the local control plane started by `make up`.
	@$(CLUSTER) down

env: ## Print the export line for the running local control plane.
	@$(CLUSTER) env

demo: ## Watch Palisade protect a small API, step by step, on the local control plane.
	@bash scripts/demo.sh

demo-down: ## Stop the demo's processes (make down stops them and the control plane).
	@bash scripts/demo.sh down

plugin: ## Build kubectl-palisade (release) and pack dist/kubectl-palisade_<os>_<arch>.tar.gz, the archive .krew.yaml names.
	$(CARGO) build --release -p kubectl-palisade
	@bash scripts/plugin-dist.sh "$(CARGO_TARGET_DIR)/release/kubectl-palisade"

crds: ## Regenerate the CRD manifests (crds/, the chart's copy) and docs/api.md from the Rust types.
	$(CARGO) run --quiet -p palisade-crds --bin crdgen
	cp crds/*.yaml charts/palisade/files/crds/

sidecar-pgo: ## The sidecar's profile-guided release build (what make bench measures) -> $(CARGO_TARGET_DIR)/pgo/release/palisade-sidecar.
	@bash bench/setup.sh
	$(CARGO) build --release -p palisade-sidecar -p palisade-bench
	python3 bench/bench.py pgo

bench-profile: sidecar-pgo ## Instructions (callgrind) and system calls (perf) per proxied request: sidecar vs nginx/HAProxy -> bench/results/profile.md.
	python3 bench/bench.py profile

bench-sched: sidecar-pgo ## What holds the server CPU while each proxy serves 5,000 RPS (perf sched): proxy, application, host -> bench/results/sched.md.
	python3 bench/bench.py sched

EVAL_DAYS ?= 1
eval-detection: ## Score the detection rules on the seeded traffic model (virtual clock) -> bench/results/detection.md. EVAL_DAYS=n: days per scenario.
	$(CARGO) build --release -p palisade-bench --bin palisade-loadgen
	$(CARGO_TARGET_DIR)/release/palisade-loadgen eval --days $(EVAL_DAYS) --out bench/results/detection.md

bench: sidecar-pgo ## Benchmarks side by side (sidecar vs nginx/HAProxy, policy, detection) -> bench/results/. BENCH_QUICK=1: a few minutes.
	python3 bench/bench.py all
	python3 bench/bench.py profile
	python3 bench/bench.py sched
	$(CARGO) build --release -p palisade-operator -p palisade-e2e --bins
	$(CARGO_TARGET_DIR)/release/apply-latency
	$(CARGO_TARGET_DIR)/release/detect-mitigate
	$(CARGO_TARGET_DIR)/release/collector-scale
	python3 bench/bench.py api-cost
	python3 bench/bench.py reliability
