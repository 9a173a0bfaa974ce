#!/usr/bin/env bash
# Installs what `make bench` needs from Debian's packages, only when missing: nginx, HAProxy,
# wrk (for cross-checks), GNU time (peak RSS), util-linux's taskset, valgrind and perf (the
# instruction and system-call profile) and LLVM's llvm-profdata (the sidecar's profile-guided build).
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v taskset >/dev/null || need+=(util-linux)
command -v valgrind >/dev/null || need+=(valgrind)
command -v perf >/dev/null || need+=(linux-perf)
command -v python3 >/dev/null || need+=(python3)
# The sidecar's profile-guided build (bench.py pgo) merges its profile with the llvm-profdata of
# rustc's own LLVM major version: rustup's llvm-tools component when present, else Debian's.
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
sysroot_tool="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"
[ -x "$sysroot_tool" ] || command -v "llvm-profdata-$llvm" >/dev/null || need+=("llvm-$llvm")
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs 2 CPUs (servers on CPU 0, load generator on CPU 1)" >&2
  exit 1
fi
