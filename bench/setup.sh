#!/usr/bin/env bash
# Installs what `make bench` needs from Debian's packages, only when missing: nginx, HAProxy,
# wrk (for cross-checks), GNU time (peak RSS), util-linux's taskset and valgrind (the
# instruction profile).
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v taskset >/dev/null || need+=(util-linux)
command -v valgrind >/dev/null || need+=(valgrind)
command -v python3 >/dev/null || need+=(python3)
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
