#!/usr/bin/env python3
"""Palisade benchmarks: `make bench` runs `bench.py all` (see docs/benchmarks.md).

Subcommands (each writes one results file under bench/results/):
  proxy      side-by-side proxy run on loopback -> proxy.md
  lookup     criterion `cargo bench -p palisade-policy` summary -> lookup.md
  detection  criterion `cargo bench -p palisade-detection` summary -> detection-counter.md
  operator   compile time and peak RSS of 1M prefixes + 1000 actions, nginx/HAProxy load of
             the same list -> operator.md
  profile    instructions per proxied request under callgrind (nginx, HAProxy, the sidecar
             with the empty and the 1M bundle), where the sidecar's go, and system calls per
             request under perf -> profile.md
  ratelimit  criterion `cargo bench -p palisade-sidecar --bench limit` -> ratelimit.md
  memory     the sidecar started alone with the empty and the 1M bundle, no traffic: idle
             RSS and anonymous memory, median of BENCH_MEMORY_RUNS (5) -> memory.md
  all        operator, proxy, memory, lookup, detection, ratelimit (profile is separate: it needs
             valgrind)
  proxy-report  re-render proxy.md from the last proxy run's raw data
  proxy-pool [RUN_DIR...]  judge the goals over several full proxy runs of one sidecar binary
             (default: every one kept under $BENCH_WORK/runs with the latest run's binary)
             -> proxy-pool.md
  sched      what runs on the server CPU while each proxy serves 5,000 RPS: `perf sched`
             traces of the proxy, the application and every other task (BENCH_SCHED_SECONDS,
             BENCH_SCHED_ROUNDS) -> sched.md
  pgo        the sidecar's profile-guided release build, which proxy and profile measure
             ($CARGO_TARGET_DIR/pgo/release/palisade-sidecar; needs rustc's llvm-profdata)

BENCH_QUICK=1 shortens every run (a few minutes in all); BENCH_ROUNDS, BENCH_DURATION,
BENCH_SAT_DURATION and BENCH_SLICE (seconds: each contender's turn in the interleaved
fixed-rate runs) override the proxy run's shape; BENCH_SIDECAR (a path) measures
another sidecar binary than the profile-guided build; BENCH_BASELINE (a path, label in
BENCH_BASELINE_LABEL) adds that sidecar binary to the proxy run as `baseline-empty` and
`baseline-1M`, same bundles, same run, with an A/B table. Numbers are reported, never asserted.
Environment: CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/release), BENCH_WORK (scratch
directory, default $PALISADE_CACHE/bench or ~/.cache/palisade/bench).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
CACHE = Path(os.environ.get("PALISADE_CACHE", Path.home() / ".cache" / "palisade"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
BIN = TARGET / "release"
# The sidecar the proxy run and the profile measure: the profile-guided release build that
# `bench.py pgo` makes (`make sidecar-pgo`), or the binary BENCH_SIDECAR names.
PGO_TARGET = TARGET / "pgo"
SIDECAR = Path(os.environ.get("BENCH_SIDECAR", PGO_TARGET / "release" / "palisade-sidecar"))
WORK = Path(os.environ.get("BENCH_WORK", CACHE / "bench"))
# Every proxy run's raw data, kept for `proxy-pool`.
RUNS = WORK / "runs"
LISTS = WORK / "lists"
SERVER_CPU = "0"
LOAD_CPU = "1"

# Protocol (shared/notes/performance-anchors.md §9): 1k and 5k RPS open loop, 32 keep-alive
# connections, 1 KB responses, 5 rounds of 20 s measured per contender (interleaved in turns
# of a second), medians of per-round percentiles.
# The fixed-rate runs interleave the contenders: in each round, one loadgen run gives every
# contender turns of SLICE seconds (the first SLICE_WARMUP of each not recorded) until each
# has DURATION seconds measured, so a drift of the host falls on all of them alike.
if QUICK:
    ROUNDS, DURATION, WARMUP, SAT_DURATION, SLICE = 3, 3.0, 1.0, 3.0, 0.5
else:
    ROUNDS, DURATION, WARMUP, SAT_DURATION, SLICE = 5, 20.0, 2.0, 10.0, 1.0
SLICE_WARMUP = 0.1
ROUNDS = int(os.environ.get("BENCH_ROUNDS", ROUNDS))
DURATION = float(os.environ.get("BENCH_DURATION", DURATION))
SAT_DURATION = float(os.environ.get("BENCH_SAT_DURATION", SAT_DURATION))
SLICE = float(os.environ.get("BENCH_SLICE", SLICE))
_SHAPE = [f"{k}={os.environ[k]}" for k in ("BENCH_ROUNDS", "BENCH_DURATION", "BENCH_SAT_DURATION",
                                           "BENCH_SLICE")
          if k in os.environ]
MODE = (f"custom ({' '.join(_SHAPE)})" if _SHAPE
        else "quick (BENCH_QUICK=1)" if QUICK else "full")
RATES = [1000, 5000]
CONNECTIONS = 32
# Ports: BENCH_PORT_BASE + 0..7 (proxies), + 1000 + n (sidecar admin). Default 21080, away
# from the ports the demo and the e2e tests use and below the ephemeral range (32768+), where
# a connect to a port nobody listens on can connect to itself.
BASE = int(os.environ.get("BENCH_PORT_BASE", "21080"))
APP_PORT = BASE

# name -> (port, description); order is the alternation order of round 0.
CONTENDERS = {
    "direct": (BASE + 0, "direct to the app (nginx static, 1 KB)"),
    "nginx": (BASE + 1, "nginx reverse proxy, keep-alive upstream"),
    "haproxy": (BASE + 2, "HAProxy, nbthread 1, http-reuse always"),
    "palisade-empty": (BASE + 3, "Palisade sidecar, empty policy bundle"),
    "palisade-1M": (BASE + 4, "Palisade sidecar, 1M prefixes + 1000 actions"),
    "nginx-geo-1M": (BASE + 5, "nginx + `geo` 1M list, `if ($blocked) return 403`"),
    "haproxy-f-1M": (BASE + 7, "HAProxy + `src -f` 1M list, `http-request deny`"),
    "nginx-deny-1M": (BASE + 6, "nginx + 1M `deny` lines (saturation run only)"),
}
# An A/B of two sidecar builds in one run: BENCH_BASELINE is the other build's binary.
BASELINE = os.environ.get("BENCH_BASELINE", "")
BASELINE_LABEL = os.environ.get("BENCH_BASELINE_LABEL", BASELINE)
SIDECARS = [("palisade-empty", BASE + 3, "empty"), ("palisade-1M", BASE + 4, "big")]
if BASELINE:
    CONTENDERS["baseline-empty"] = (
        BASE + 8, f"the BENCH_BASELINE sidecar ({BASELINE_LABEL}), empty policy bundle")
    CONTENDERS["baseline-1M"] = (
        BASE + 9, f"the BENCH_BASELINE sidecar ({BASELINE_LABEL}), 1M prefixes + 1000 actions")
    SIDECARS += [("baseline-empty", BASE + 8, "empty"), ("baseline-1M", BASE + 9, "big")]
FIXED_RATE = [c for c in CONTENDERS if c != "nginx-deny-1M"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, text=True,
                          capture_output=True, **kw).stdout


def machine():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    # The reports themselves do not make the measured code differ from the commit.
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--", ".",
                ":!bench/results"]).strip() != ""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "ncpu": os.cpu_count(),
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "load": os.getloadavg(),
        "git": rev + (" (with uncommitted changes)" if dirty else ""),
        "mode": MODE,
    }


def header(title, m, command, extra=""):
    load = " / ".join(f"{x:.2f}" for x in m["load"])
    return (
        f"# {title}\n\n"
        f"- Date: {m['date']}; mode: {m['mode']}; commit {m['git']}.\n"
        f"- Machine: {m['cpu']}, {m['ncpu']} vCPU (KVM), {m['mem_gib']} GiB, Linux {m['kernel']}.\n"
        f"- Load average when the run started: {load} (1/5/15 min)."
        + (" The machine had been busy (other work, or a build just before: the 1-minute\n"
           "  average keeps a finished build's load for a few minutes), so absolute numbers may be\n"
           "  noisy; same-run ratios less so.\n" if m["load"][0] > 1.5 else " The machine was quiet.\n")
        + f"- Command: `{command}`.\n{extra}\n"
    )


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_us(x):
    if x is None:
        return "–"
    if abs(x) >= 10_000:
        return f"{x / 1000:.1f} ms"
    return f"{x:.0f} µs"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def ratio(a, b):
    # A ratio to or of a negative difference (a proxy "adding" less than nothing: the host's
    # tails, not the proxy) means nothing.
    if a is None or b is None or b <= 0 or a < 0:
        return None
    return a / b


def met(ok):
    return "–" if ok is None else ("**met**" if ok else "**not met**")


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    def __init__(self):
        self.procs = {}

    def start(self, name, argv, env=None):
        logf = open(WORK / f"{name}.log", "w")
        p = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], stdout=logf, stderr=logf,
                             env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = p
        return p

    def stop_all(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def pids(self, name):
        """The process and its children (nginx workers)."""
        p = self.procs[name]
        out = [p.pid]
        try:
            out += [int(x) for x in sh(["pgrep", "-P", str(p.pid)]).split()]
        except subprocess.CalledProcessError:
            pass
        return out


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / tick


def wait_http(port, path="/index.html", timeout=180, expect=200):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == expect:
                    return
                last = r.status
        except urllib.error.HTTPError as e:
            last = e.code
        except Exception as e:  # refused, reset, or not HTTP yet
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not answering {expect} (last: {last})")


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------------------------------------
# Configurations

NGINX_COMMON = """worker_processes 1;
daemon off;
user root;
pid {w}/{name}.pid;
error_log {w}/{name}.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {w}/tmp/{name}-body;
  proxy_temp_path {w}/tmp/{name}-proxy;
  fastcgi_temp_path {w}/tmp/{name}-fcgi;
  uwsgi_temp_path {w}/tmp/{name}-uwsgi;
  scgi_temp_path {w}/tmp/{name}-scgi;
{body}
}}
"""

NGINX_UPSTREAM = """  upstream app {{ server 127.0.0.1:{app}; keepalive 64; keepalive_requests 100000000; }}"""
PROXY_LOC = """proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";"""


def nginx_conf(name, body):
    path = WORK / f"{name}.conf"
    path.write_text(NGINX_COMMON.format(w=WORK, name=name, body=body))
    return path


def nginx_proxy_conf(name, port):
    """nginx as the plain reverse proxy every run compares with: `port` to the application
    (APP_PORT) over keep-alive upstream connections."""
    return nginx_conf(name, f"""{NGINX_UPSTREAM.format(app=APP_PORT)}
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ {PROXY_LOC} }} }}""")


def haproxy_conf(name, port, acl):
    path = WORK / f"{name}.cfg"
    path.write_text(f"""global
  nbthread 1
  maxconn 4000
  pidfile {WORK}/{name}.pid
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:{port}
{acl}  default_backend app
backend app
  http-reuse always
  server app 127.0.0.1:{APP_PORT}
""")
    return path


def prepare_lists():
    """The 1M list in every form, and both bundles (cached in WORK/lists)."""
    LISTS.mkdir(parents=True, exist_ok=True)
    if not (LISTS / "list-v4.txt").exists():
        log("generating the 1M-prefix list")
        sh([str(BIN / "mkbundle"), "gen", str(LISTS)])
    if not (LISTS / "big" / "manifest.json").exists():
        log("compiling the 1M-prefix + 1000-action bundle")
        sh([str(BIN / "mkbundle"), "compile", str(LISTS)])


def sidecar_binary():
    if not SIDECAR.exists():
        sys.exit(f"no sidecar at {SIDECAR}: `python3 bench/bench.py pgo` builds it (make bench "
                 "does), or BENCH_SIDECAR names another build")
    return str(SIDECAR)


def sidecar_build():
    """What the reports say of the measured sidecar binary."""
    if "BENCH_SIDECAR" in os.environ:
        return f"`{SIDECAR}` (BENCH_SIDECAR)"
    return ("the profile-guided release build (`make sidecar-pgo`: `bench.py pgo`, trained on "
            "the loads of `PGO_LOADS`)")


def sidecar_argv(binary, port, app_port, bundle):
    """The sidecar in front of the app on `port` (admin on port + 1000) with a bundle of LISTS."""
    return [
        str(binary),
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{port + 1000}",
        "--upstream-port", str(app_port),
        "--bundle-path", str(LISTS / bundle),
        "--geoip-db", str(LISTS / "geo.mmdb"),
        "--asn-db", str(LISTS / "asn.mmdb"),
        "--log-format", "plain",
        "--fail-closed",  # 503 until the bundle is loaded: a 200 means it is in force
    ]


def start_app(procs, www):
    """The application every contender proxies to: nginx serving WORK/www."""
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("x" * 1023 + "\n")
    procs.start("app", ["nginx", "-c", str(nginx_conf("app", f"""  server {{ listen 127.0.0.1:{APP_PORT} backlog=4096; root {www};
    location / {{ }} }}""")), "-p", str(WORK)])


def start_all(procs):
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    for port in {p for p, _ in CONTENDERS.values()} | {BASE + 1003, BASE + 1004}:
        if not port_free(port):
            raise RuntimeError(f"port {port} is in use; stop what holds it")
    start_app(procs, WORK / "www")
    up = NGINX_UPSTREAM.format(app=APP_PORT)
    procs.start("nginx", ["nginx", "-c", str(nginx_proxy_conf("nginx", BASE + 1)), "-p", str(WORK)])
    confs = {
        "nginx-geo-1M": f"""{up}
  geo $blocked {{ include {LISTS}/nginx-geo.conf; }}
  server {{ listen 127.0.0.1:{BASE + 5} backlog=4096;
    location / {{ if ($blocked) {{ return 403; }} {PROXY_LOC} }} }}""",
        "nginx-deny-1M": f"""{up}
  server {{ listen 127.0.0.1:{BASE + 6} backlog=4096;
    location / {{ include {LISTS}/nginx-deny.conf; allow all; {PROXY_LOC} }} }}""",
    }
    for name, body in confs.items():
        procs.start(name, ["nginx", "-c", str(nginx_conf(name, body)), "-p", str(WORK)])
    procs.start("haproxy", ["haproxy", "-db", "-f", str(haproxy_conf("haproxy", BASE + 2, ""))])
    acl = f"  http-request deny if {{ src -f {LISTS}/list-v4.txt }}\n"
    procs.start("haproxy-f-1M",
                ["haproxy", "-db", "-f", str(haproxy_conf("haproxy-f-1M", BASE + 7, acl))])
    for name, port, bundle in SIDECARS:
        binary = BASELINE if name.startswith("baseline-") else sidecar_binary()
        procs.start(name, sidecar_argv(binary, port, APP_PORT, bundle), env={"RUST_LOG": "warn"})
    for name, (port, _) in CONTENDERS.items():
        if procs.procs.get("app" if name == "direct" else name).poll() is not None:
            raise RuntimeError(f"{name} exited; see {WORK}/{name}.log")
        wait_http(port)
    for _, port, _ in SIDECARS:
        wait_http(port + 1000, "/ready")


def sidecar_metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [line for line in text.splitlines()
            if line.startswith(("palisade_sidecar_requests", "palisade_sidecar_bundle"))]


# ---------------------------------------------------------------------------------------------
# proxy


BENCH_REQUEST = ["--path", "/index.html", "--header", "X-Api-Key: bench-key"]


def loadgen(name, rate, duration, rnd, request=BENCH_REQUEST, warmup=WARMUP):
    port = CONTENDERS[name][0]
    out = sh(["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), "--addr", f"127.0.0.1:{port}",
              *request, "--rate", str(rate), "--connections", str(CONNECTIONS),
              "--duration", str(duration), "--warmup", str(warmup), "--label", name])
    r = json.loads(out)
    r["round"] = rnd
    return r


def loadgen_interleaved(names, rate, duration, rnd, request=BENCH_REQUEST):
    """One interleaved loadgen run over `names` (in that order in the first cycle): one
    result per contender, as `loadgen` gives for one."""
    targets = [a for name in names for a in ("--target", f"{name}=127.0.0.1:{CONTENDERS[name][0]}")]
    out = sh(["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), *targets, *request,
              "--rate", str(rate), "--connections", str(CONNECTIONS), "--duration", str(duration),
              "--warmup", str(WARMUP), "--slice", str(SLICE), "--slice-warmup", str(SLICE_WARMUP)])
    runs = [json.loads(line) for line in out.splitlines() if line.strip()]
    for r in runs:
        r["round"] = rnd
    return runs


def proxy():
    m = machine()
    m["sidecar"] = sidecar_build()
    m["sidecar_sha256"] = sha256_16(sidecar_binary())
    m.update(rounds=ROUNDS, duration=DURATION, sat_duration=SAT_DURATION, slice=SLICE,
             slice_warmup=SLICE_WARMUP, sat_interleaved=True)
    if BASELINE:
        m["baseline"] = BASELINE_LABEL
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    except OSError:
        pass
    WORK.mkdir(parents=True, exist_ok=True)
    prepare_lists()
    procs = Procs()
    runs = []
    rss = {}
    try:
        t0 = time.time()
        start_all(procs)
        log(f"all contenders up in {time.time() - t0:.1f} s")
        time.sleep(1)
        for name in CONTENDERS:
            pname = "app" if name == "direct" else name
            rss[name] = {"idle": rss_kib(procs.pids(pname))}
        for rnd in range(ROUNDS):
            order = FIXED_RATE[rnd % len(FIXED_RATE):] + FIXED_RATE[:rnd % len(FIXED_RATE)]
            if rnd % 2:
                order.reverse()
            for rate in RATES:
                pids = {name: procs.pids("app" if name == "direct" else name) for name in order}
                c0 = {name: cpu_seconds(p) for name, p in pids.items()}
                for r in loadgen_interleaved(order, rate, DURATION, rnd):
                    name = r["label"]
                    r["cpu_s"] = cpu_seconds(pids[name]) - c0[name]
                    if name == "direct":
                        # The app serves every contender's turn at the same rate: its share
                        # of one turn is what it spent over the run ÷ the contenders.
                        r["cpu_s"] /= len(order)
                    runs.append(r)
                    log(f"round {rnd} {rate}/s {name}: p50 {r['p50_us']:.0f} µs p99 "
                        f"{r['p99_us']:.0f} µs rps {r['rps']:.0f} err {r['errors']}")
            # Saturation interleaved the same way (closed loop in each turn): back-to-back
            # runs of 10 s gave the host's drift to whichever contender had its turn (the
            # empty-bundle sidecar's rate moved 18.8k-23.2k from round to round of one run).
            for r in loadgen_interleaved(order + ["nginx-deny-1M"], 0, SAT_DURATION, rnd):
                runs.append(r)
                log(f"round {rnd} saturation {r['label']}: rps {r['rps']:.0f}"
                    f" p99 {r['p99_us']:.0f} µs")
        for name in CONTENDERS:
            pname = "app" if name == "direct" else name
            rss[name]["loaded"] = rss_kib(procs.pids(pname))
        metrics = {name: sidecar_metrics(port + 1000) for name, port, _ in SIDECARS}
        (WORK / "sidecar-metrics.json").write_text(json.dumps(metrics, indent=1))
    finally:
        procs.stop_all()
    m["load_end"] = os.getloadavg()
    (WORK / "proxy-runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (WORK / "proxy-meta.json").write_text(json.dumps({"machine": m, "rss": rss}))
    archive_run()
    write_proxy(m, runs, rss)


def ab_table(m, by):
    """This build against the BENCH_BASELINE build, from the same run: added latency and
    saturation RPS of each, and this build's ÷ the baseline's (below 1.0× is cheaper for
    latency, above 1.0× is better for RPS)."""
    label = m.get("baseline", BASELINE_LABEL)
    out = [f"## A/B: this build against the baseline build ({label})\n\n"
           "Same run, same bundles, alternated like every contender.\n\n"
           "| measure | policy | this build | baseline | this ÷ baseline |\n|---|---|---|---|---|\n"]
    for policy in ("empty", "1M"):
        me, base = f"palisade-{policy}", f"baseline-{policy}"
        for rate in RATES:
            for key, what in (("p50_us", "added p50"), ("p99_us", "added p99")):
                a, b = added(by, me, rate, key), added(by, base, rate, key)
                out.append(f"| {what} at {rate} RPS | {policy} | {fmt_us(a)} | {fmt_us(b)}"
                           f" | {fmt_ratio(ratio(a, b))} |\n")
        a, b = med(by, me, 0, "rps"), med(by, base, 0, "rps")
        out.append(f"| saturation RPS | {policy} | {a or 0:.0f} | {b or 0:.0f}"
                   f" | {fmt_ratio(ratio(a, b))} |\n")
    return "".join(out) + "\n"


def load_run(d):
    """(meta, runs) of a proxy run's raw data in directory `d`."""
    meta = json.loads((d / "proxy-meta.json").read_text())
    runs = [json.loads(line) for line in (d / "proxy-runs.jsonl").read_text().splitlines()
            if line.strip()]
    return meta, runs


def proxy_report():
    """Re-renders proxy.md from the last run's raw data."""
    meta, runs = load_run(WORK)
    write_proxy(meta["machine"], runs, meta["rss"])


def sha256_16(path):
    """The first 16 hex digits of a file's SHA-256: which binary a run measured."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def run_name(meta):
    """An archived run's directory name: its start, `2026-12-07T1749`."""
    return meta["machine"]["date"].removesuffix(" UTC").replace(" ", "T").replace(":", "")


def archive_run():
    """Keeps the last proxy run's raw data under $BENCH_WORK/runs/<start>/ for `proxy-pool`."""
    meta, _ = load_run(WORK)
    d = RUNS / run_name(meta)
    d.mkdir(parents=True, exist_ok=True)
    for f in ("proxy-meta.json", "proxy-runs.jsonl"):
        shutil.copy(WORK / f, d / f)
    log(f"kept the run's raw data in {d}")


def pool_dirs(args):
    """The archived runs `proxy-pool` pools: the directories named, or else every full run
    under $BENCH_WORK/runs that measured the same sidecar binary (SHA-256) as the latest one."""
    if args:
        return [Path(a) for a in args]
    runs = sorted(d for d in RUNS.glob("*") if (d / "proxy-meta.json").exists())
    if not runs:
        sys.exit(f"no archived proxy runs under {RUNS}: `bench.py proxy` keeps each run there")
    metas = {d: load_run(d)[0]["machine"] for d in runs}
    latest = metas[runs[-1]].get("sidecar_sha256")
    if latest is None:
        sys.exit(f"{runs[-1]} does not record which sidecar binary it measured; name the "
                 "runs to pool")
    return [d for d in runs
            if metas[d].get("sidecar_sha256") == latest and metas[d].get("mode") == "full"]


def pool_runs(loaded, pools):
    """Several runs of one sidecar build as one: their records with rounds renumbered apart
    (run i's round k is i·1000 + k, so "added" still pairs a contender with the direct run
    of its own round), leaving out the fixed-rate records of a run at a rate where that run
    was noisy (NOISE_P99_US); `pools` is each run's own pool. Returns (records, {run index:
    its noisy rates})."""
    records, noisy = [], {}
    for i, (_, runs) in enumerate(loaded):
        noisy[i] = noisy_rates(by_contender(runs), pools[i])
        records += [dict(r, round=i * 1000 + r["round"]) for r in runs
                    if not (r["rate"] and r["rate"] in noisy[i])]
    return records, noisy


def proxy_pool(args, pooler=None):
    """proxy-pool.md: the latest proxy runs of one sidecar build judged together, each run's
    verdicts beside the pooled ones."""
    pooler = pooler or pooled
    dirs = pool_dirs(args)
    loaded = [load_run(d) for d in dirs]
    pools = [pooler(runs) for _, runs in loaded]
    records, noisy = pool_runs(loaded, pools)
    by, pool = by_contender(records), pooler(records)
    pooled_noisy = noisy_rates(by, pool)
    goals = proxy_goals(by, pool, None, pooled_noisy)
    each = [proxy_goals(by_contender(runs), pools[i], None, noisy[i])
            for i, (_, runs) in enumerate(loaded)]
    latest = loaded[-1][0]["machine"]
    n = len(loaded)
    out = [f"# Proxy benchmark: {n} runs of one sidecar build judged together\n\n"
           f"- Runs: {', '.join(meta['machine']['date'] for meta, _ in loaded)} (the load average\n"
           "  of each, and every round, are in its own proxy.md).\n"
           f"- Machine of the latest: {latest['cpu']}, {latest['ncpu']} vCPU (KVM),"
           f" {latest['mem_gib']} GiB, Linux {latest['kernel']}.\n"
           f"- The sidecar: {latest.get('sidecar', 'the release build')}, SHA-256"
           f" {latest.get('sidecar_sha256', '?')}….\n"
           "- Command: `python3 bench/bench.py proxy-pool" + "".join(f" {a}" for a in args) +
           "`.\n\n"]
    out.append(
        "One run's verdicts move with the host: with no change to the sidecar, a goal met in one\n"
        "full run is missed in the next. This report takes the full proxy runs that measured the\n"
        "same sidecar binary (its SHA-256) and judges the goals on all of them at once: each\n"
        "contender's samples at a rate pooled over every round of every run (`loadgen --pool`),\n"
        "\"added\" paired with the direct run of the same round, saturation the median over all\n"
        "rounds. A run whose application p99 at a rate is over the noise limit (1 ms at 1,000 RPS,\n"
        "2 ms at 5,000: `NOISE_P99_US`) is left out of the pool at that rate. Memory is not pooled\n"
        "(memory.md and each run's proxy.md).\n\n"
        "## The runs\n\n"
        "| run | commit | sidecar SHA-256 | application p99 at 1,000 / 5,000 RPS, pooled |"
        " pooled at 1,000 RPS | pooled at 5,000 RPS |\n|---|---|---|---|---|---|\n")
    for i, (meta, runs) in enumerate(loaded):
        mm, p = meta["machine"], pools[i]
        d99 = " / ".join(fmt_us((p.get(("direct", rate)) or {}).get("p99_us")) for rate in RATES)
        inp = " | ".join("no (noisy)" if rate in noisy[i] else "yes" for rate in RATES)
        out.append(f"| {mm['date']} | {mm['git']} | {mm.get('sidecar_sha256', '?')} | {d99}"
                   f" | {inp} |\n")
    out.append("\n## Each run's verdicts\n\n| goal | " +
               " | ".join(meta["machine"]["date"][5:16] for meta, _ in loaded) +
               " |\n|---|" + "---|" * n + "\n")
    for k, g in enumerate(goals):
        cells = [e[k][2] if e[k][3] is None else f"{fmt_ratio(e[k][3])} {e[k][2]}" for e in each]
        out.append(f"| {g[0]} | " + " | ".join(cells) + " |\n")
    out.append("\n")
    out.append(noise_warning(pooled_noisy))
    out.append(f"## Goals over the {n} runs pooled\n\n| goal | measured | status |\n|---|---|---|\n")
    for g in goals:
        out.append(f"| {g[0]} | {n} runs: {g[1]} | {g[2]} |\n")
    (RESULTS / "proxy-pool.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'proxy-pool.md'} from {n} runs")


def rounds_table(by):
    """Round by round, each sidecar's added p50 and p99 against nginx's: how often the
    median's verdict holds, which one median over rounds does not show."""
    out = ["## Round by round: added latency against nginx's\n\n"
           "Each round's added p50 / p99 (contender − direct in that round). \"At or under\n"
           "nginx\" counts the rounds in which the sidecar's added value was no more than nginx's.\n\n"
           "| rate | contender | " + " | ".join(
               f"round {r['round']}" for r in by.get(("direct", RATES[0]), [])) +
           " | p50 at or under nginx | p99 at or under nginx |\n"]
    rounds = len(by.get(("direct", RATES[0]), []))
    out.append("|---|---|" + "---|" * rounds + "---|---|\n")
    for rate in RATES:
        direct = {r["round"]: r for r in by.get(("direct", rate), [])}

        def adds(name):
            return {r["round"]: (r["p50_us"] - direct[r["round"]]["p50_us"],
                                 r["p99_us"] - direct[r["round"]]["p99_us"])
                    for r in by.get((name, rate), []) if r["round"] in direct}
        ng = adds("nginx")
        for name in ("nginx", "palisade-empty", "palisade-1M"):
            mine = adds(name)
            cells = " | ".join(f"{mine[k][0]:.0f} / {mine[k][1]:.0f} µs" if k in mine else "–"
                               for k in sorted(direct))
            if name == "nginx":
                out.append(f"| {rate} RPS | {name} | {cells} | – | – |\n")
                continue
            both = [k for k in mine if k in ng]
            p50 = sum(mine[k][0] <= ng[k][0] for k in both)
            p99 = sum(mine[k][1] <= ng[k][1] for k in both)
            out.append(f"| {rate} RPS | {name} | {cells} | {p50} of {len(both)}"
                       f" | {p99} of {len(both)} |\n")
    return "".join(out) + "\n"


def pooled(runs):
    """The fixed-rate runs of each contender and rate pooled over the rounds by `loadgen
    --pool`: the percentiles of all their samples together ({} for runs recorded before
    loadgen printed its histogram)."""
    lines = [json.dumps(r) for r in runs if r["rate"] and "histogram" in r]
    if not lines:
        return {}
    out = sh([str(BIN / "loadgen"), "--pool"], input="\n".join(lines) + "\n")
    pools = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {(p["label"], p["rate"]): p for p in pools}


def pooled_table(pool):
    """Each contender's percentiles of every sample of the run at a rate (all rounds at
    once), and what it added to the direct ones."""
    out = ["## Pooled: every round's samples at once\n\n"
           "The same runs, each contender's samples at a rate taken together (`loadgen --pool`:\n"
           "one histogram of all rounds) instead of a median of each round's percentile: the\n"
           "p99 of every sample, which a few slow seconds in one round do not decide alone.\n"
           "\"Added\" = the contender's pooled percentile − the direct one's.\n\n"
           "| rate | contender | samples | p50 | p99 | p99.9 | added p50 | added p99 |"
           " added p50 ÷ nginx | added p99 ÷ nginx |\n|---|---|---|---|---|---|---|---|---|---|\n"]
    for rate in RATES:
        direct = pool.get(("direct", rate))
        if direct is None:
            continue

        def add(name, key):
            p = pool.get((name, rate))
            return None if p is None else p[key] - direct[key]
        for name in FIXED_RATE:
            p = pool.get((name, rate))
            if p is None:
                continue
            cells = [fmt_us(p["p50_us"]), fmt_us(p["p99_us"]), fmt_us(p["p999_us"])]
            if name == "direct":
                cells += ["–"] * 4
            else:
                a50, a99 = add(name, "p50_us"), add(name, "p99_us")
                cells += [fmt_us(a50), fmt_us(a99),
                          fmt_ratio(ratio(a50, add("nginx", "p50_us"))),
                          fmt_ratio(ratio(a99, add("nginx", "p99_us")))]
            out.append(f"| {rate} RPS | {name} | {p['samples']} | " + " | ".join(cells) + " |\n")
    return "".join(out) + "\n"


def cpu_share(r):
    """vCPU a contender used during its turns (the whole run when it was not interleaved)."""
    return r.get("cpu_s", 0) / r.get("active_s", r["duration_s"])


def by_contender(runs):
    """The runs grouped by (contender, rate); rate 0 is saturation."""
    by = {}
    for r in runs:
        by.setdefault((r["label"], r["rate"]), []).append(r)
    return by


def med(by, name, rate, key):
    """Median over rounds of a contender's value at a rate."""
    return median([r[key] for r in by.get((name, rate), [])])


def added(by, name, rate, key):
    """Median over rounds of (contender − direct) in the same round."""
    direct = {r["round"]: r[key] for r in by.get(("direct", rate), [])}
    return median([r[key] - direct[r["round"]] for r in by.get((name, rate), [])
                   if r["round"] in direct])


def pooled_added(pool, name, rate, key):
    """Pooled percentile of the contender − the direct one's (None without histograms)."""
    a, d = pool.get((name, rate)), pool.get(("direct", rate))
    return None if a is None or d is None else a[key] - d[key]


# The application's own p99 (direct to it, pooled) above which a rate's p99 goals are not
# judged: the host's tails then swamp the tens to hundreds of microseconds a proxy adds. The
# quiet runs of 2026-12-07 had it at 389-529 µs at 1,000 RPS (over 1 ms in the noisy ones) and
# 0.40-1.06 ms at 5,000 RPS, where the application queues behind the proxy on one CPU; the
# 5,000 RPS limit is twice the quiet runs' highest (a noisy run: 3.9 and 5.1 ms).
NOISE_P99_US = {1000: 1000, 5000: 2000}


def noisy_rates(by, pool):
    """{rate: the application's own p99} for each rate whose p99 is over NOISE_P99_US: the
    pooled p99 when the run has histograms, else the median over rounds."""
    out = {}
    for rate, limit in NOISE_P99_US.items():
        p = pool.get(("direct", rate))
        d99 = p["p99_us"] if p else med(by, "direct", rate, "p99_us")
        if d99 is not None and d99 > limit:
            out[rate] = d99
    return out


def mb(mib):
    """MiB (what ps and the memory tables give) in the MB (10^6 bytes) the goals say."""
    return mib * 1024 * 1024 / 1e6


SATURATION_GOALS = [
    ("P1 saturation RPS (empty policy) ≥ 1.0× nginx", "palisade-empty", "nginx", 1.0),
    ("P2 RPS with 1M list ≥ 0.97× empty policy", "palisade-1M", "palisade-empty", 0.97),
    ("P2 RPS with 1M list ≥ 1.0× HAProxy `-f` 1M", "palisade-1M", "haproxy-f-1M", 1.0),
    ("P2 RPS with 1M list ≥ 1.0× nginx `geo` 1M", "palisade-1M", "nginx-geo-1M", 1.0),
    ("P2 RPS with 1M list ≥ 50× nginx `deny` 1M", "palisade-1M", "nginx-deny-1M", 50.0),
]


def proxy_goals(by, pool, rss, noisy):
    """The proxy run's goals as (goal, measured, status, ratio): the latency goals on the
    pooled samples when the run has them (the median over rounds beside them), a p99 goal
    left unjudged at a rate in `noisy`; CPU at 1,000 RPS; saturation; and, given `rss`, the
    memory goals in MB."""
    goals = []

    def latency_goal(label, rate, key, name, other, limit):
        rm = ratio(added(by, name, rate, key), added(by, other, rate, key))
        rounds = (f"{fmt_us(added(by, name, rate, key))} vs {fmt_us(added(by, other, rate, key))}"
                  f" = {fmt_ratio(rm)}")
        if pool:
            a, b = pooled_added(pool, name, rate, key), pooled_added(pool, other, rate, key)
            r = ratio(a, b)
            measured = (f"pooled {fmt_us(a)} vs {fmt_us(b)} = {fmt_ratio(r)};"
                        f" median of rounds {rounds}")
        else:
            r, measured = rm, rounds
        status = met(None if r is None else r <= limit)
        if rate in noisy and key == "p99_us":
            status = "– (noisy run: see the warning)"
        goals.append((label, measured, status, r))

    for rate in RATES:
        latency_goal(f"P1 added p50 ≤ 1.0× nginx (stretch 0.8×), {rate} RPS", rate, "p50_us",
                     "palisade-empty", "nginx", 1.0)
        latency_goal(f"P1 added p99 ≤ 1.0× nginx, {rate} RPS", rate, "p99_us",
                     "palisade-empty", "nginx", 1.0)
        latency_goal(f"P2 added p99 with 1M list ≤ 1.05× empty policy, {rate} RPS", rate,
                     "p99_us", "palisade-1M", "palisade-empty", 1.05)
        if rate == 1000:
            pc = median([cpu_share(r) for r in by.get(("palisade-empty", rate), [])])
            nc = median([cpu_share(r) for r in by.get(("nginx", rate), [])])
            rc = ratio(pc, nc)
            goals.append(("P10 CPU at 1k RPS ≤ 1.2× nginx worker and ≤ 0.05 vCPU",
                          f"{pc or 0:.3f} vs {nc or 0:.3f} vCPU = {fmt_ratio(rc)}",
                          met(None if rc is None else rc <= 1.2 and pc <= 0.05), rc))
    for label, mine, other, goal in SATURATION_GOALS:
        a, b = med(by, mine, 0, "rps"), med(by, other, 0, "rps")
        r = ratio(a, b)
        goals.append((label, f"{a or 0:.0f} vs {b or 0:.0f} = {fmt_ratio(r)}",
                      met(None if r is None else r >= goal), r))
    if rss:
        # The goals say MB: judged in megabytes (10^6 bytes), the MiB that ps and the memory
        # table give shown beside them.
        e_idle = rss["palisade-empty"]["idle"] / 1024
        b_idle = rss["palisade-1M"]["idle"] / 1024
        goals.append(("P10 sidecar RSS idle ≤ 15 MB without lists",
                      f"{e_idle:.1f} MiB = {mb(e_idle):.1f} MB", met(mb(e_idle) <= 15),
                      mb(e_idle)))
        goals.append(("P10 + ≤ 8 MB per 1M IPv4 prefixes (with 1000 actions)",
                      f"+{b_idle - e_idle:.1f} MiB = +{mb(b_idle - e_idle):.1f} MB",
                      met(mb(b_idle - e_idle) <= 8), mb(b_idle - e_idle)))
    return goals


def noise_warning(noisy):
    """The warning a run (or a pool) whose application p99 is over NOISE_P99_US gets."""
    if not noisy:
        return ""
    what = " and ".join(f"{fmt_us(d99)} at {rate} RPS (limit {fmt_us(NOISE_P99_US[rate])})"
                        for rate, d99 in sorted(noisy.items()))
    return (f"> **Noise warning:** the application's own p99 (direct to it) was {what}.\n"
            "> The tails at that rate come from the host (other guests, or other processes\n"
            "> sharing CPU 0), not from the proxies, so its p99 goals below are not judged;\n"
            "> p50 and saturation ratios are less affected. Rerun on a quiet machine before\n"
            "> quoting those p99s.\n\n")


def write_proxy(m, runs, rss, pool=None):
    by = by_contender(runs)
    if pool is None:
        pool = pooled(runs)
    noisy = noisy_rates(by, pool)

    out = [header("Proxy benchmark: Palisade sidecar vs nginx and HAProxy", m,
                  (" ".join(_SHAPE) + " python3 bench/bench.py proxy" if _SHAPE else
                   ("BENCH_QUICK=1 " if QUICK else "") + "make bench  (bench/bench.py proxy)"),
                  f"- Load average when it ended: "
                  f"{' / '.join(f'{x:.2f}' for x in m['load_end'])}.\n")]
    out.append(
        "## Setup\n\n"
        "All contenders run side by side in one run, on loopback. Every server process (the app\n"
        "and all proxies) is pinned to CPU 0 (`taskset -c 0`); the load generator (bench/loadgen,\n"
        "open loop, wrk2-style: latency from each request's scheduled send time, HdrHistogram) is\n"
        f"pinned to CPU 1. {CONNECTIONS} keep-alive connections, `GET /index.html` (1 KB static file\n"
        "from nginx, 1 worker) with a `User-Agent` and an `X-Api-Key` header. Client 127.0.0.1 is\n"
        "not in the 1M list, so every request is forwarded (a miss is the full cost: all 1000\n"
        "actions are evaluated). Proxies: 1 worker / 1 thread each; the sidecar's tokio runtime\n"
        "sees one CPU. " + (
            f"At each fixed rate the contenders are interleaved: in each of {m['rounds']} rounds one\n"
            f"load generator run gives every contender turns of {m['slice']:g} s (a cycle gives each one\n"
            "turn, in an order rotated and reversed from cycle to cycle; the first "
            f"{m['slice_warmup'] * 1000:.0f} ms of a\n"
            "turn, while the contender's idle connections warm up, and a first cycle are not\n"
            f"recorded) until each has {m['duration']:.0f} s measured, so a drift of the host over\n"
            "seconds or minutes falls on every contender alike. " + (
                "Then the same interleaving in closed loop\n"
                "(saturation: each connection sends its next request as soon as its answer is in)\n"
                f"until each contender has {m['sat_duration']:.0f} s measured. "
                if m.get("sat_interleaved") else
                "Then a closed-loop saturation run\n"
                f"of {m['sat_duration']:.0f} s per contender per round, alternated (rotated and reversed each\n"
                "round). ") +
            "Numbers are medians over rounds of each contender's percentile in the round;\n"
            "\"added\" = contender − direct-to-app in the same round.\n\n"
            if m.get("slice") else
            "Contenders are alternated (rotated and reversed each round);\n"
            f"{ROUNDS} rounds × {DURATION:.0f} s per rate (after {WARMUP:.0f} s warm-up), then a closed-loop\n"
            f"saturation run of {SAT_DURATION:.0f} s per contender per round. Numbers are medians over\n"
            "rounds of each run's percentile. \"Added\" = contender − direct-to-app in the same round.\n\n"))
    for name, (port, desc) in CONTENDERS.items():
        out.append(f"- `{name}` (:{port}): {desc}\n")
    out.append(f"\nThe sidecar is {m.get('sidecar', 'the release build')}.\n\n")

    for rate in RATES:
        out.append(f"## Fixed rate {rate} RPS (open loop)\n\n")
        out.append("| contender | p50 | p99 | p99.9 | added p50 | added p99 | added p50 ÷ nginx |"
                   " added p99 ÷ nginx | achieved RPS | errors | CPU (proxy) |\n"
                   "|---|---|---|---|---|---|---|---|---|---|---|\n")
        n50, n99 = added(by, "nginx", rate, "p50_us"), added(by, "nginx", rate, "p99_us")
        for name in FIXED_RATE:
            a50, a99 = added(by, name, rate, "p50_us"), added(by, name, rate, "p99_us")
            errs = sum(r["errors"] + r["non2xx"] for r in by.get((name, rate), []))
            cpu = median([cpu_share(r) for r in by.get((name, rate), [])])
            out.append(
                f"| {name} | {fmt_us(med(by, name, rate, 'p50_us'))}"
                f" | {fmt_us(med(by, name, rate, 'p99_us'))}"
                f" | {fmt_us(med(by, name, rate, 'p999_us'))}"
                f" | {'–' if name == 'direct' else fmt_us(a50)} | {'–' if name == 'direct' else fmt_us(a99)}"
                f" | {'–' if name == 'direct' else fmt_ratio(ratio(a50, n50))}"
                f" | {'–' if name == 'direct' else fmt_ratio(ratio(a99, n99))}"
                f" | {med(by, name, rate, 'rps') or 0:.0f} | {errs} | "
                f"{'–' if cpu is None else f'{cpu:.3f} vCPU'} |\n")
        out.append("\n")

    out.append("## Saturation (closed loop, 32 connections)\n\n"
               "| contender | RPS | p50 | p99 | ÷ nginx | ÷ HAProxy | ÷ palisade-empty | errors |\n"
               "|---|---|---|---|---|---|---|---|\n")
    sat = {name: med(by, name, 0, "rps") for name in CONTENDERS}
    for name in CONTENDERS:
        errs = sum(r["errors"] for r in by.get((name, 0), []))
        denied = sum(r["non2xx"] for r in by.get((name, 0), []))
        out.append(f"| {name} | {sat[name] or 0:.0f} | {fmt_us(med(by, name, 0, 'p50_us'))}"
                   f" | {fmt_us(med(by, name, 0, 'p99_us'))}"
                   f" | {fmt_ratio(ratio(sat[name], sat['nginx']))}"
                   f" | {fmt_ratio(ratio(sat[name], sat['haproxy']))}"
                   f" | {fmt_ratio(ratio(sat[name], sat['palisade-empty']))}"
                   f" | {errs}{f' (+{denied} non-2xx)' if denied else ''} |\n")
    out.append("\n")

    out.append(rounds_table(by))
    if pool:
        out.append(pooled_table(pool))
    if any(r["label"].startswith("baseline-") for r in runs):
        out.append(ab_table(m, by))
    out.append("## Memory (RSS of all the contender's processes)\n\n"
               "| contender | idle, after start | after the runs |\n|---|---|---|\n")
    for name in CONTENDERS:
        out.append(f"| {name} | {rss[name]['idle'] / 1024:.1f} MiB"
                   f" | {rss[name].get('loaded', 0) / 1024:.1f} MiB |\n")
    out.append("\n")
    out.append(noise_warning(noisy))
    goals = proxy_goals(by, pool, rss, noisy)
    out.append("## Goals (shared/notes/performance-anchors.md §9)\n\n"
               "| goal | measured | status |\n|---|---|---|\n")
    for g in goals:
        out.append(f"| {g[0]} | {g[1]} | {g[2]} |\n")
    mfile = WORK / "sidecar-metrics.json"
    if mfile.exists():
        out.append("\nSidecar counters at the end of the run (every request forwarded: the\n"
                   "policy matched nothing, as intended):\n\n```\n")
        for name, lines in json.loads(mfile.read_text()).items():
            out.append(f"# {name}\n" + "\n".join(lines) + "\n")
        out.append("```\n")
    out.append(
        "\nNotes: added latency is a difference of two medians of noisy runs on a shared 2-core\n"
        "KVM guest; treat a ratio near 1.0 as \"the same\". nginx `deny` runs only in the\n"
        "saturation phase (at ~1k RPS capacity a fixed-rate run only measures its queue).\n"
        "Raw per-run JSON: `$BENCH_WORK/proxy-runs.jsonl`, kept in `$BENCH_WORK/runs/<start>/`\n"
        "for `bench.py proxy-pool`.\n")
    (RESULTS / "proxy.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'proxy.md'}")


# ---------------------------------------------------------------------------------------------
# criterion summaries

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


# ---------------------------------------------------------------------------------------------
# memory: the sidecar alone, no traffic

MEMORY_RUNS = int(os.environ.get("BENCH_MEMORY_RUNS", "3" if QUICK else "5"))


def anonymous_kib(pid):
    """Anonymous memory (heap, stacks: what the bundle adds), without the binary's pages."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Anonymous line in /proc/{pid}/smaps_rollup")


def idle_memory(bundle, port):
    """(VmRSS KiB, Anonymous KiB) of a sidecar started alone with `bundle`, 2 s after its
    bundle is loaded. Nothing listens on its upstream port: no request is sent."""
    p = subprocess.Popen(["taskset", "-c", SERVER_CPU,
                          *sidecar_argv(sidecar_binary(), port, port - 1, bundle)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"}, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"the sidecar exited ({p.returncode}) with bundle {bundle}")
            try:
                if any(line.startswith("palisade_sidecar_bundle_loaded") and line.endswith(" 1")
                       for line in sidecar_metrics(port + 1000)):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"bundle {bundle} not loaded within 120 s")
            time.sleep(0.1)
        time.sleep(2)
        return rss_kib([p.pid]), anonymous_kib(p.pid)
    finally:
        p.kill()
        p.wait()


def memory():
    m = machine()
    m["sidecar"] = sidecar_build()
    prepare_lists()
    port = BASE + 3
    for q in (port, port + 1000):
        if not port_free(q):
            raise RuntimeError(f"port {q} is in use; stop what holds it")
    runs = {"empty": [], "big": []}
    for i in range(MEMORY_RUNS):
        for bundle in ("empty", "big") if i % 2 == 0 else ("big", "empty"):
            runs[bundle].append(idle_memory(bundle, port))
            log(f"memory run {i + 1}/{MEMORY_RUNS} {bundle}: {runs[bundle][-1]} KiB")
    (WORK / "memory.json").write_text(json.dumps({"machine": m, "runs": runs}))
    rss = {b: median([r for r, _ in v]) for b, v in runs.items()}
    anon = {b: median([a for _, a in v]) for b, v in runs.items()}

    def both(kib, sign=""):
        return f"{sign}{kib / 1024:.2f} MiB = {sign}{kib * 1024 / 1e6:.2f} MB"

    out = [header("Sidecar memory, started alone", m,
                  "python3 bench/bench.py memory",
                  f"- Runs: {MEMORY_RUNS} of each bundle, alternating (BENCH_MEMORY_RUNS).\n")]
    out.append(
        "The measured sidecar is started alone, pinned to one CPU, with the empty bundle and\n"
        "with the 1M-prefix + 1,000-action bundle (`mkbundle compile`, as in proxy.md); 2 s after\n"
        "its `palisade_sidecar_bundle_loaded` metric turns 1 its memory is read from /proc: VmRSS\n"
        "(what proxy.md's memory table shows, taken there during the full run) and the anonymous\n"
        "memory (heap and stacks: what a bundle can add; the binary's own pages are the same in\n"
        "both). No request is sent. Medians of the runs; every run below.\n\n"
        "| bundle | VmRSS (median) | anonymous (median) | every run: VmRSS / anonymous KiB |\n"
        "|---|---|---|---|\n")
    for b, label in (("empty", "empty"), ("big", "1M prefixes + 1,000 actions")):
        out.append(f"| {label} | {both(rss[b])} | {both(anon[b])} | "
                   + ", ".join(f"{r} / {a}" for r, a in runs[b]) + " |\n")
    added = rss["big"] - rss["empty"]
    added_anon = anon["big"] - anon["empty"]
    out.append(f"| added by the 1M bundle | {both(added, '+')} | {both(added_anon, '+')} | |\n\n")
    # The goal rows say "started alone": proxy.md judges the same goals on its own reading.
    out.append("## Goals\n\n| goal | measured | status |\n|---|---|---|\n"
               "| P10 sidecar RSS idle ≤ 15 MB without lists (started alone, median) |"
               f" {both(rss['empty'])} |"
               f" {met(rss['empty'] * 1024 / 1e6 <= 15)} |\n"
               "| P10 + ≤ 8 MB per 1M IPv4 prefixes (with 1000 actions; started alone, median) |"
               f" {both(added, '+')} |"
               f" {met(added * 1024 / 1e6 <= 8)} |\n")
    (RESULTS / "memory.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'memory.md'}")


def cargo_bench(package, extra, targets=()):
    """Runs criterion benches; returns {bench id: median ns} and the raw output. `targets`
    names the bench targets when the library's own libtest bench would get criterion's flags."""
    cmd = ["cargo", "bench", "-p", package, *[a for t in targets for a in ("--bench", t)],
           "--", *extra]
    log(" ".join(cmd))
    p = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    text = p.stdout + "\n" + p.stderr
    (WORK / f"{package}-bench.txt").write_text(text)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    res = {}
    name = None
    for line in text.splitlines():
        mt = re.match(r"^(\S+)\s+time:\s+\[", line)
        if mt:
            name = mt.group(1)
        elif re.match(r"^[A-Za-z0-9_./-]+$", line.strip()) and "/" in line and not line.startswith(" "):
            name = line.strip()
            continue
        m2 = re.search(r"time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
        if m2 and name:
            res[name] = float(m2.group(3)) * UNITS[m2.group(4)]
        m3 = re.search(r"thrpt:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
        if m3 and name:
            res[name + " (thrpt)"] = f"{m3.group(3)} {m3.group(4)}"
    return res, text


def crit_rows(res, scale=1.0, unit="ns"):
    """Markdown rows `| name | median |` of criterion results (ns) in `unit` (ns ÷ `scale`)."""
    return [f"| `{k}` | {v / scale:.1f} {unit} |\n" for k, v in res.items()
            if isinstance(v, float)]


def crit_args():
    return ["--warm-up-time", "1", "--measurement-time", "2"] if QUICK else []


def lookup():
    m = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    prepare_lists()
    res, text = cargo_bench("palisade-policy", crit_args())
    bpp = {}
    for line in text.splitlines():
        mt = re.match(r"^(v4|v6): .* = ([\d.]+) B/prefix", line)
        if mt:
            bpp[mt.group(1)] = float(mt.group(2))
        mt = re.match(r"^encoded: (\d+) shards, (\d+) bytes = ([\d.]+) B/prefix", line)
        if mt:
            bpp["bundle"] = float(mt.group(3))
    ev = json.loads(sh([str(BIN / "mkbundle"), "eval", str(LISTS),
                        "--calls", "500000" if QUICK else "2000000"]))
    (WORK / "eval.json").write_text(json.dumps(ev))

    def g(k):
        return res.get(k)

    out = [header("Policy micro-benchmarks (lookup, evaluate)", m,
                  "cargo bench -p palisade-policy" + (" -- " + " ".join(crit_args()) if QUICK else "")
                  + "; mkbundle eval (per-call evaluate histogram)")]
    out.append("Criterion medians (the middle of criterion's confidence interval), 1M synthetic\n"
               "prefixes (70 % /32, 20 % /24, 10 % /16–/23, uniform random; IPv6: 50 % /48, 30 %\n"
               "/64, 20 % /128 in 2000::/3). \"Dependent\" chains each query on the previous answer\n"
               "(latency bound); \"independent\" lets the CPU overlap queries (throughput).\n\n"
               "| benchmark | median |\n|---|---|\n")
    for k, v in res.items():
        if isinstance(v, float):
            out.append(f"| `{k}` | {v:.1f} ns |" if v < 1e5 else f"| `{k}` | {v / 1e6:.2f} ms |")
            out.append("\n")
    out.append("\n")
    out.append("| memory | value |\n|---|---|\n")
    for k, v in bpp.items():
        out.append(f"| {k} | {v:.2f} B/prefix |\n")
    out.append("\n## evaluate per call (mkbundle eval)\n\n"
               "1M prefixes + 1000 actions of every condition kind; each call timed with\n"
               "`Instant::now()` pairs (the timer's own cost, p50 "
               f"{ev['timer_p50_ns']} ns, is included in the numbers below).\n"
               "Mix: random IPv4, region/ASN/UA/app/API key/method/path drawn so that\n"
               f"{ev['denied_share'] * 100:.1f} % are denied. \"Own request\" is the proxy benchmark's\n"
               "request (a miss everywhere: the full walk).\n\n"
               "| | p50 | p99 | p99.9 | mean |\n|---|---|---|---|---|\n"
               f"| mixed requests | {ev['eval_p50_ns']} ns | {ev['eval_p99_ns']} ns |"
               f" {ev['eval_p999_ns']} ns | {ev['eval_mean_ns']:.0f} ns |\n"
               f"| own request | {ev['own_p50_ns']} ns | {ev['own_p99_ns']} ns | – | – |\n\n"
               f"Bundle decode + index build: {ev['decode_ms']:.0f} ms; load for a workload: "
               f"{ev['load_ms']:.1f} ms.\n\n")

    v4dep = g("ipset_v4_1M/random_dependent")
    v4ind = g("ipset_v4_1M/random_independent")
    v6dep = g("ipset_v6_1M/dependent")
    evalc = g("evaluate_1000_actions_1M_prefixes/evaluate")
    rows = [
        ("P3 IPv4 membership ≤ 30 ns dependent (1M)", f"{v4dep or 0:.1f} ns",
         met(None if v4dep is None else v4dep <= 30)),
        ("P3 IPv4 independent (throughput)", f"{v4ind or 0:.1f} ns", "(context)"),
        ("P3 ≤ 8 B/prefix (index in memory)", f"{bpp.get('v4', 0):.2f} B/prefix",
         met(bpp.get("v4", 99) <= 8) if "v4" in bpp else "–"),
        ("P3 IPv6 ≤ 60 ns (1M)", f"{v6dep or 0:.1f} ns", met(None if v6dep is None else v6dep <= 60)),
        ("P3 ≤ 2× poptrie throughput time in the same bench", "no poptrie in the bench", "not measured"),
        ("P4 whole decision ≤ 1 µs p99", f"p99 {ev['eval_p99_ns']} ns (mixed), "
         f"{ev['own_p99_ns']} ns (own request); criterion mean {evalc or 0:.0f} ns",
         met(ev["eval_p99_ns"] <= 1000)),
        ("P5 country+ASN ≤ 100 ns amortised", "GeoIP lookup is in the sidecar, not benchmarked here",
         "not measured"),
        ("P6 bundle decode + index build for 1M ≤ 250 ms",
         f"{g('bundle_1M_v4/decode') and g('bundle_1M_v4/decode') / 1e6 or ev['decode_ms']:.0f} ms",
         met((g("bundle_1M_v4/decode") or ev["decode_ms"] * 1e6) <= 250e6)),
    ]
    out.append("## Goals\n\n| goal | measured | status |\n|---|---|---|\n")
    for r in rows:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} |\n")
    out.append("\nRaw criterion output: `$BENCH_WORK/palisade-policy-bench.txt`.\n")
    (RESULTS / "lookup.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'lookup.md'}")


def detection():
    m = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    res, text = cargo_bench("palisade-detection", crit_args(), targets=["counter", "window"])
    per = 1 << 16  # requests per criterion iteration (detection/benches/counter.rs)
    views = {k: res.pop(k) for k in list(res) if k.startswith("window/")}
    out = [header("Detection micro-benchmarks (per-request counting, collector views)", m,
                  "cargo bench -p palisade-detection --bench counter --bench window"
                  + (" -- " + " ".join(crit_args()) if QUICK else ""))]
    out.append("`Counter::record` over 65,536 requests per iteration (skewed client popularity,\n"
               "facts built per request as the sidecar does), one `take_report` per iteration.\n\n"
               "| benchmark | per iteration | per request | throughput |\n|---|---|---|---|\n")
    worst = None
    for k, v in res.items():
        if isinstance(v, float):
            ns = v / per
            worst = ns if worst is None else max(worst, ns)
            out.append(f"| `{k}` | {v / 1e6:.3f} ms | {ns:.1f} ns | {res.get(k + ' (thrpt)', '–')} |\n")
    default = res.get("record/ip_10k_clients")
    default = None if default is None else default / per

    def fmt_ns(x):
        return "–" if x is None else f"{x:.1f} ns"

    mem = [line for line in text.splitlines() if re.search(r"B/client|bytes per", line)]
    per_client = next((float(x.group(1)) for x in
                       (re.search(r"^memory ip_10k_clients: .* = ([\d.]+) B/client", line)
                        for line in mem) if x), None)
    if mem:
        out.append("\nMemory lines printed by the bench:\n\n```\n" + "\n".join(mem) + "\n```\n")
    out.append("\n## Collector window views\n\n"
               "What the leader builds for each namespace every `--detection-interval`: the\n"
               "24 h view over 96 slices of 15 min and the 5 min view over 10 slices of 30 s, each\n"
               "slice holding the same clients (a steady population), built repeatedly within one\n"
               "slice as the leader does (`detection/benches/window.rs`).\n\n"
               "| benchmark | median |\n|---|---|\n")
    ingest = views.pop("window/ingest_maximal_report", None)
    out += crit_rows(views, 1e3, "µs")
    per_slice = {m.group(1): float(m.group(2)) for m in
                 (re.search(r"^memory (windows_\S+): .* ([\d.]+) B per client per slice", line)
                  for line in mem) if m}
    if per_slice:
        out.append("\nMemory per client per slice (the slices' tables and the table of full client keys,\n"
                   "over the 97 slices that hold each client; a closed slice stores a client as a\n"
                   "16-byte id and its counts, 72 bytes, and an API key's, token's, user agent's or\n"
                   "prefix's full key once per namespace):\n\n| windows | bytes per client per slice |\n"
                   "|---|---|\n")
        out += [f"| `{k}` | {v:.1f} |\n" for k, v in per_slice.items()]
    size = next((m.group(1) for m in (re.search(r"^size maximal_report: (\d+) bytes", line)
                                      for line in text.splitlines()) if m), None)
    out.append("\n## The collector's cost of a maximal report\n\n"
               "The most a sender can make the collector do with one request: a report at every\n"
               "bound (16,384 clients never seen before, 4096 attribute values of 128 bytes"
               + (f", {int(size):,} bytes of JSON" if size else "") + "), parsed and merged into\n"
               "windows that have not seen its clients (`window/ingest_maximal_report`).\n\n")
    if ingest is not None:
        out.append(f"| per report | reports per second per core |\n|---|---|\n"
                   f"| {ingest / 1e6:.1f} ms | {1e9 / ingest:.0f} |\n\n")
    else:
        out.append("Not printed by the bench.\n\n")
    out.append("A namespace may send 10 reports a second and bursts of 120 per pod that carries the\n"
               "sidecar (at least 2 pods), whatever pod names its reports use, and a report beyond\n"
               "that is refused before it is read (429 `NamespaceReportRateExceeded`): one\n"
               "namespace's share of the leader's CPU is at most that rate times this cost, e.g.\n"
               + (f"{20 * ingest / 1e7:.0f} % of one core for a namespace without injected pods. "
                  if ingest is not None else "") +
               "The windows' memory is held to `--collector-window-budget-mib`\n"
               "(`tests/e2e/tests/e2e_quota.rs`, docs/operator.md \"Quotas\").\n")
    out.append("\n## Goals\n\n| goal | measured | status |\n|---|---|---|\n"
               f"| P9 all detection counters ≤ 50 ns/request (default config, `record/ip_10k_clients`)"
               f" | {fmt_ns(default)} (worst configuration: {fmt_ns(worst)}) | "
               f"{met(None if default is None else default <= 50)} |\n"
               "| P9 ≤ 128 B per tracked client (`ip_10k_clients`: client maps / tracked keys) | " +
               (f"{per_client:.0f} B/client | {met(per_client <= 128)} |\n" if per_client is not None
                else "not printed by the bench | not measured |\n") +
               "| P8 detect→mitigate p99 ≤ 2 s | measured end to end by `detect-mitigate` | see [detect-mitigate.md](detect-mitigate.md) |\n")
    out.append("\nRaw criterion output: `$BENCH_WORK/palisade-detection-bench.txt`.\n")
    (RESULTS / "detection-counter.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'detection-counter.md'}")


# ---------------------------------------------------------------------------------------------
# operator


def timed(argv):
    """Runs argv under /usr/bin/time -v; returns (wall s, max RSS KiB, stdout)."""
    p = subprocess.run(["taskset", "-c", SERVER_CPU, "/usr/bin/time", "-v", *argv],
                       text=True, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {p.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    secs = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return secs, rss, p.stdout


def operator():
    m = machine()
    LISTS.mkdir(parents=True, exist_ok=True)
    if not (LISTS / "list-v4.txt").exists():
        sh([str(BIN / "mkbundle"), "gen", str(LISTS)])
    reps = 1 if QUICK else 3
    comp = []
    for _ in range(reps):
        wall, rss, out = timed([str(BIN / "mkbundle"), "compile", str(LISTS)])
        comp.append((wall, rss, json.loads(out)))
    # nginx `geo` and HAProxy `-f` loading the same list, side by side.
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    geo = nginx_conf("check-geo", f"""  geo $blocked {{ include {LISTS}/nginx-geo.conf; }}
  server {{ listen 127.0.0.1:{BASE + 19}; location / {{ if ($blocked) {{ return 403; }} return 200; }} }}""")
    hcfg = haproxy_conf("check-haproxy", BASE + 18,
                        f"  http-request deny if {{ src -f {LISTS}/list-v4.txt }}\n")
    ng = [timed(["nginx", "-t", "-q", "-c", str(geo), "-p", str(WORK)]) for _ in range(reps)]
    hp = [timed(["haproxy", "-c", "-q", "-f", str(hcfg)]) for _ in range(reps)]

    c_ms = median([c[2]["compile_ms"] for c in comp])
    tot_ms = median([c[2]["total_ms"] for c in comp])
    c_rss = median([c[1] for c in comp]) / 1024
    ng_s, ng_rss = median([x[0] for x in ng]), median([x[1] for x in ng]) / 1024
    hp_s, hp_rss = median([x[0] for x in hp]), median([x[1] for x in hp]) / 1024
    wall = median([c[0] for c in comp])
    last = comp[-1][2]
    out = [header("Operator-side compile benchmark", m,
                  "bench/bench.py operator: /usr/bin/time -v mkbundle compile; nginx -t; haproxy -c")]
    out.append(
        f"Input: {last['prefixes']:,} IPv4 prefixes (the synthetic 70/20/10 list) referenced by one\n"
        f"deny action, plus 999 more actions cycling through every condition kind ({last['actions']}\n"
        f"in the bundle). `mkbundle compile` = read the list text, `palisade_policy::compile`,\n"
        f"`encode` (zlib shards) and write `manifest.json` + shards to a directory, i.e. the\n"
        f"operator's work without the API server. Pinned to CPU 0; median of {reps} run(s).\n\n"
        "| step | time | peak RSS |\n|---|---|---|\n"
        f"| compile (parse text + build index + 1000 actions) | {c_ms:.0f} ms | |\n"
        f"| encode (zlib shards) | {median([c[2]['encode_ms'] for c in comp]):.0f} ms | |\n"
        f"| write bundle directory | {median([c[2]['write_ms'] for c in comp]):.0f} ms | |\n"
        f"| compile + encode + write | {tot_ms:.0f} ms | |\n"
        f"| whole process (`/usr/bin/time`, includes reading 16 MB text) | {wall * 1000:.0f} ms |"
        f" {c_rss:.1f} MiB |\n"
        f"| nginx `geo` 1M: `nginx -t` | {ng_s * 1000:.0f} ms | {ng_rss:.1f} MiB |\n"
        f"| HAProxy `-f` 1M: `haproxy -c` | {hp_s * 1000:.0f} ms | {hp_rss:.1f} MiB |\n\n"
        f"Bundle: {last['shards']} shards, {last['bundle_bytes']:,} bytes = "
        f"{last['bundle_bytes_per_prefix']:.2f} B/prefix on the wire; {last['v4_ranges']:,} merged\n"
        f"ranges, {last['index_heap_bytes'] / last['prefixes']:.2f} B/prefix in memory.\n\n")
    rows = [
        ("P11/issue 5: prefix set compile ≤ 250 ms", f"{c_ms:.0f} ms (whole compile incl. "
         "text parse and 1000 actions)", met(c_ms <= 250)),
        ("P11: compile + write everything ≤ 1 s", f"{tot_ms:.0f} ms", met(tot_ms <= 1000)),
        ("P6: ≤ 0.15× nginx `geo` parse", f"{fmt_ratio(ratio(wall, ng_s))} (whole process)",
         met(ratio(wall, ng_s) <= 0.15)),
        ("P6: ≤ 0.2× HAProxy load", f"{fmt_ratio(ratio(wall, hp_s))} (whole process)",
         met(ratio(wall, hp_s) <= 0.2)),
        ("P6: peak RSS ≤ 0.1× nginx `geo` RSS", f"{c_rss:.1f} vs {ng_rss:.1f} MiB = "
         f"{fmt_ratio(ratio(c_rss, ng_rss))}", met(ratio(c_rss, ng_rss) <= 0.1)),
    ]
    out.append("## Goals\n\n| goal | measured | status |\n|---|---|---|\n")
    for r in rows:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} |\n")
    out.append(
        "\nApply → bundle written (issue 5) and apply → enforce (P7) on the real API server are\n"
        "measured by `make bench`'s `apply-latency`: [apply-latency.md](apply-latency.md).\n")
    old = RESULTS / "operator.md"
    kept = old.read_text() if old.exists() else ""
    if API_SECTION in kept:
        out.append("\n" + kept[kept.index(API_SECTION):])
    (RESULTS / "operator.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'operator.md'}")


def e2e_test(binary, test):
    """Runs one e2e test (which asserts its outcome) on the local control plane; its command
    and what it printed on stderr. Exits when it fails."""
    # The test starts the debug binaries built next to it.
    sh(["cargo", "build", "-q", "--workspace", "--bins"], cwd=ROOT)
    cmd = ["cargo", "test", "-q", "-p", "palisade-e2e", "--test", binary, test, "--",
           "--exact", "--nocapture"]
    log(" ".join(cmd))
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    return cmd, run.stderr


RELIABILITY_TESTS = [
    ("e2e_outage", "a_minute_without_the_api_server_loses_no_request_and_no_expiry",
     "API server unreachable from an injected sidecar for 60 s while traffic runs (a link the "
     "test cuts between the sidecar and the API server); an action's `ttl` ends during the "
     "outage, another action is applied during it"),
    ("e2e_chaos",
     "the_leader_killed_during_a_flood_and_a_bundle_change_loses_no_request_and_no_incident",
     "the leader killed with SIGKILL (two operators, the sidecar reporting to the other one) "
     "while a flood runs and right after an action was applied"),
    ("e2e_chaos",
     "the_leader_cut_from_the_api_server_steps_down_and_writes_nothing_when_it_returns",
     "the leader cut from the API server for 20 s (a link the test cuts between that operator "
     "and the API server; the other operator and the sidecar keep it) while a flood runs and "
     "right after an action was applied; then the link is back"),
    ("e2e_etcd_restart",
     "etcd_restarted_during_a_flood_loses_no_request_no_object_and_no_incident",
     "etcd killed (SIGKILL), down 10 s and started again on its data directory, while a flood "
     "runs (a control plane of the test's own: one operator, one sidecar)"),
]


def reliability():
    """Runs the reliability e2e tests (each asserts its outcome) and writes the figures they
    print to reliability.md."""
    m = machine()
    rows = []
    for binary, test, what in RELIABILITY_TESTS:
        _, stderr = e2e_test(binary, test)
        line = next((l for l in stderr.splitlines() if l.startswith("reliability: ")), "")
        rows.append((what, f"`cargo test -p palisade-e2e --test {binary} -- --nocapture`",
                     line.removeprefix("reliability: ") or "(not printed)"))
    out = [header("Reliability: what an outage costs", m, "bench/bench.py reliability")]
    out.append(
        "Each scenario is an e2e test on the local control plane (real processes, real "
        "sockets) that asserts its outcome — no failed request, no wrong answer, the change "
        "enforced, the incident kept — and prints the figures below.\n\n"
        "| scenario | command | what it measured |\n|---|---|---|\n")
    out += [f"| {a} | {b} | {c} |\n" for a, b, c in rows]
    out.append(
        "\nWhat a SIGKILLed leader loses: the reports it accepted after its last state snapshot "
        "(`--collector-snapshot-interval`: 1 s in the test, 30 s by default), which the windows no longer count; the sidecar keeps every report "
        "the collector did not accept and sends it again. A bundle change in flight is "
        "compiled again by the new leader (it reconciles every namespace when it takes over).\n\n"
        "Measured elsewhere, already asserted by tests: a policy swap under load fails no request "
        "(`sidecar/tests/enforce.rs::bundle_swap_under_load_fails_no_request`); a leader stopped "
        "gracefully hands its windows and incidents to the next one "
        "(`tests/e2e/tests/e2e_failover.rs`, see bench/results/detect-mitigate.md).\n\n"
        "What a leader cut from the API server loses: nothing it had written; it stops leading "
        "when it has not seen its own Lease renewal for a lease duration (`--lease-duration`, "
        "3 s in the test, 15 s by default), so the other replica leads alone, and when the link "
        "is back it follows without writing from the caches it kept while away.\n\n"
        "What an etcd restart loses: nothing stored (the objects and the incident are read back "
        "after it); the API server fails every request while etcd is down, so the operator "
        "stops leading and the sidecars keep their last bundle.\n")
    (RESULTS / "reliability.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'reliability.md'}")


API_SECTION = "## API requests per apply and per evaluation tick"
API_TEST = "an_apply_costs_its_writes_and_an_idle_evaluation_tick_reads_nothing"


def api_cost():
    """Runs the e2e test that counts the operator's API requests (its own counter) for an apply,
    a referenced list changed and idle evaluation ticks, and writes its figures into the
    API section of operator.md."""
    m = machine()
    cmd, stderr = e2e_test("e2e_api_load", API_TEST)
    rows = []
    for label in ("an action applied", "a referenced IP list changed",
                  "five idle evaluation rounds"):
        line = next((l for l in stderr.splitlines() if l.startswith(label + ":")), None)
        rows.append((label, (line or ":  (not printed)").split(":", 1)[1].strip() or "none"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = [
        f"{API_SECTION}\n\n",
        f"Measured {when} by `{' '.join(cmd)}` (commit {m['git']}): the operator on the "
        "local control plane counts its own requests (`palisade_operator_kube_requests_total`, "
        "by component, verb and resource), so nothing else talking to the API server counts. "
        "The test asserts what the table shows: no LIST outside a watch's own, at most one read "
        "of the manifest the reconcile has just written, one read of a changed list, and no "
        "read at all in idle evaluation ticks.\n\n",
        "| what happened | requests the operator sent (verb resource: count) |\n|---|---|\n",
    ]
    section += [f"| {a} | {b} |\n" for a, b in rows]
    section.append(
        "\nBefore the shared caches (issue 18 item 5), each reconcile LISTed the namespace's "
        "SecurityActions, DetectionRules, injected Pods and ConfigMaps (metadata), read the "
        "manifest twice and the referenced lists whole, and applied the reader Role and its "
        "RoleBinding: at least 7 reads and 2 writes per reconcile, whatever changed (counted "
        "from the code of a4d764f, not measured), and an apply triggers two or three "
        "reconciles (its own, then its status changes).\n")
    path = RESULTS / "operator.md"
    text = path.read_text() if path.exists() else ""
    if API_SECTION in text:
        text = text[:text.index(API_SECTION)]
    text = text.rstrip("\n") + "\n\n" if text else ""
    path.write_text(text + "".join(section))
    log(f"wrote the API section of {path}")


# ---------------------------------------------------------------------------------------------
# profile: user-space instructions per proxied request (callgrind). Instruction counts do not
# depend on the machine's load, so this is the steady number behind the noisy timings.

PROFILE_REQUESTS_RATE, PROFILE_SECONDS = 500, 8
# The sidecar's parts worth naming: (label, function names as callgrind_annotate prints them,
# self or inclusive). An async fn's body is its `{{closure}}`.
PROFILE_PARTS = [
    ("`forward::Forwarder::forward` (upstream request and response head)",
     ["palisade_sidecar::forward::Forwarder::forward::{{closure}}"], "incl"),
    # (`identify` before issue 17, `identify_with` since: a binary has one of them.)
    ("`identify::Identifier::identify_with`",
     ["palisade_sidecar::identify::Identifier::identify",
      "palisade_sidecar::identify::Identifier::identify_with"], "incl"),
    # (`read` until the per-connection memo of 2026-12-06, `read_with` since.)
    ("of which `credentials::Reader::read_with` (API keys, tokens, methods)",
     ["palisade_sidecar::credentials::Reader::read",
      "palisade_sidecar::credentials::Reader::read_with"], "incl"),
    ("of which sha256 (API key)", ["sha2::sha256::compress256"], "incl"),
    ("of which `client_ip::client_ip` (trusted proxies)",
     ["palisade_sidecar::client_ip::client_ip"], "incl"),
    ("`target::prepare` (path normalisation)", ["palisade_sidecar::target::prepare"], "incl"),
    ("`sanitize::strip_reserved`", ["palisade_sidecar::sanitize::strip_reserved"], "incl"),
    ("`forward::strip_hop_by_hop` (request and response)",
     ["palisade_sidecar::forward::strip_hop_by_hop"], "incl"),
    ("`forward::Forwarder::prepare` (target, Host, X-Forwarded-For and -Proto)",
     ["palisade_sidecar::forward::Forwarder::prepare"], "incl"),
    ("`enforce::enforce` (policy)", ["palisade_sidecar::enforce::enforce"], "incl"),
    ("of which `palisade_policy::evaluate`", ["palisade_policy::evaluate::evaluate"], "incl"),
    ("`metrics::Metrics::request`", ["palisade_sidecar::metrics::Metrics::request"], "incl"),
    # The codecs of both hops (what issue 23 has to bring down): on the client side hyper's
    # server until issue 23's fourth step, `h1_server` since; on the upstream side hyper's
    # client until issue 23's third step, `h1` since (a binary has one of each pair).
    ("request head parse (from the client; `h1_server::parse_head`, hyper's server before)",
     ["<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse",
      "palisade_sidecar::h1_server::parse_head"], "incl"),
    ("request head encode (to the app; `h1::encode_head`, hyper's client before)",
     ["<hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::encode",
      "palisade_sidecar::h1::encode_head"], "incl"),
    ("response head parse (from the app; `h1::parse_head`, hyper's client before)",
     ["<hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::parse",
      "palisade_sidecar::h1::parse_head"], "incl"),
    ("response head encode (to the client; `h1_server::encode_head`, hyper's server before)",
     ["<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::encode",
      "palisade_sidecar::h1_server::encode_head"], "incl"),
    ("the client connection's I/O (`h1_server`: the head's reads with its parse, the response's writes; hyper's server dispatch before)",
     ["palisade_sidecar::h1_server::read_head::{{closure}}",
      "palisade_sidecar::h1_server::poll_body",
      "<hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T> as core::future::future::Future>::poll"],
     "incl"),
    ("the upstream connection's I/O (`h1`: the head's reads with its parse, the request's writes, the body's reads; hyper's client dispatch before)",
     ["palisade_sidecar::forward::Forwarder::handshake::{{closure}}::{{closure}}",
      "palisade_sidecar::h1::Conn::poll_head", "palisade_sidecar::h1::Conn::poll_send",
      "<palisade_sidecar::h1::ResponseBody as http_body::Body>::poll_frame"], "incl"),
    ("HeaderName parsing (`HeaderName::from_bytes`)",
     ["http::header::name::HeaderName::from_bytes"], "incl"),
    ("malloc + free + realloc (self)",
     ["malloc", "free", "realloc", "_int_malloc", "_int_free", "_int_realloc",
      "malloc_consolidate", "unlink_chunk.constprop.0"], "self"),
    ("memcpy / memmove (self)", ["__memcpy_avx_unaligned_erms", "__memmove_avx_unaligned_erms",
                                 "memcpy", "memmove"], "self"),
]
ANNOTATE_LINE = re.compile(
    r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+(?:[^\s:]+:(?!:))?(.+?)(?: \[[^\]]*\])?$")


def callgrind_total(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def callgrind_functions(path, inclusive):
    """{function: instructions}. callgrind_annotate prints a function once per source file
    its code came from (inlined code); self counts of those rows add up, while the inclusive
    row of the function's own file already holds the others, so that is the largest one."""
    text = sh(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
               "--threshold=100", str(path)])
    out = {}
    for line in text.splitlines():
        m = ANNOTATE_LINE.match(line)
        if m:
            n, prev = int(m.group(1).replace(",", "")), out.get(m.group(2), 0)
            out[m.group(2)] = max(n, prev) if inclusive else n + prev
    return out


def callgrind_parts(path, requests):
    """Instructions per request of each of PROFILE_PARTS."""
    funcs = {"incl": callgrind_functions(path, True), "self": callgrind_functions(path, False)}
    return [(label, sum(funcs[kind].get(n, 0) for n in names) / max(requests, 1))
            for label, names, kind in PROFILE_PARTS]


SYSCALL_RATE, SYSCALL_SECONDS = 1000, 5
# The system calls counted one by one (the rest are "other"): what proxies serve with.
SYSCALL_NAMES = ["recvfrom", "read", "readv", "recvmsg", "sendto", "write", "writev", "sendmsg",
                 "epoll_wait", "epoll_pwait", "epoll_ctl", "getsockopt", "setsockopt",
                 "clock_gettime", "futex"]


def syscalls(sidecars):
    """System calls a proxied request costs each proxy, natively: `perf stat` counts the
    kernel's syscall tracepoints of the serving process while loadgen sends SYSCALL_RATE
    requests a second (no slowdown: nothing stops the process, unlike strace). `sidecars`:
    (name, binary, bundle, label) of the sidecar builds to count."""
    if not shutil.which("perf"):
        sys.exit("the profile needs perf (Debian: apt-get install linux-perf; bench/setup.sh does)")
    base = BASE + 30
    out_dir = WORK / "syscalls"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    events = (["task-clock", "context-switches", "raw_syscalls:sys_enter"]
              + [f"syscalls:sys_enter_{n}" for n in SYSCALL_NAMES])
    procs = Procs()
    rows = []
    try:
        start_app(procs, WORK / "www")
        procs.start("nginx", ["nginx", "-c", str(nginx_proxy_conf("sc-nginx", base + 1)),
                              "-p", str(WORK)])
        procs.start("haproxy", ["haproxy", "-db", "-f",
                                str(haproxy_conf("sc-haproxy", base + 2, ""))])
        contenders = [("nginx", base + 1, "nginx reverse proxy, keep-alive upstream (its worker)"),
                      ("haproxy", base + 2, "HAProxy, nbthread 1, http-reuse always")]
        for i, (name, binary, bundle, label) in enumerate(sidecars):
            port = base + 3 + i
            procs.start(name, sidecar_argv(binary, port, APP_PORT, bundle), env={"RUST_LOG": "warn"})
            contenders.append((name, port, label))
        wait_http(APP_PORT)
        for name, port, label in contenders:
            wait_http(port)
            # The serving process: nginx's worker (the master's child), else the process.
            pid = procs.pids(name)[-1]
            load = ["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), "--addr", f"127.0.0.1:{port}",
                    *BENCH_REQUEST, "--rate", str(SYSCALL_RATE), "--connections", str(CONNECTIONS),
                    "--warmup", "0"]
            sh([*load, "--duration", "2"])  # the connections, both hops, are open before counting
            counted = out_dir / f"{name}.csv"
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(counted),
                                     "-e", ",".join(events), "-p", str(pid)],
                                    stdout=subprocess.DEVNULL,
                                    stderr=open(out_dir / f"{name}.err", "w"))
            time.sleep(0.5)  # attached before the counted requests
            r = json.loads(sh([*load, "--duration", str(SYSCALL_SECONDS), "--label", name]))
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=30)
            counts = {}
            for line in counted.read_text().splitlines():
                f = line.split(",")
                if len(f) > 2 and re.fullmatch(r"[0-9.]+", f[0]):
                    event = f[2].split(":sys_enter_")[-1].replace("raw_syscalls:sys_enter", "all")
                    counts[event] = float(f[0])
            if not counts.get("all"):
                raise RuntimeError(
                    f"perf stat counted no system call of {name} (see {out_dir}/{name}.err): the "
                    "syscall tracepoints need root or kernel.perf_event_paranoid <= -1")
            rows.append((label, r["completed"], r["errors"], counts))
            log(f"syscalls {name}: {counts.get('all', 0) / max(r['completed'], 1):.2f} a request, "
                f"{counts.get('task-clock', 0) * 1000 / max(r['completed'], 1):.1f} µs CPU")
    finally:
        procs.stop_all()
    shown = [n for n in SYSCALL_NAMES
             if any(counts.get(n, 0) * 10 >= requests for _, requests, _, counts in rows)]
    out = ["\n## System calls per request (perf, natively)\n\n"
           f"Each proxy runs natively with the proxy run's request at {SYSCALL_RATE} RPS on "
           f"{CONNECTIONS} keep-alive\nconnections; after 2 s of traffic open the connections, "
           "`perf stat` counts the kernel's syscall\ntracepoints (`raw_syscalls:sys_enter` for all, "
           "`syscalls:sys_enter_<name>` for each) of the\nserving process (nginx's worker), every "
           f"thread, for the {SYSCALL_SECONDS} s of load that follow. The reads and\nwrites a "
           "request takes do not depend on the machine's load; `epoll_wait` does a little (a\n"
           "slower process finds more events in one wait). Calls made by fewer than one request in "
           "ten\nare in \"other\" (the periodic work of the sidecar's other threads among them). "
           "The same `perf stat`\ncounts the process's `task-clock` (CPU time, user and kernel, "
           "to the nanosecond: on loopback\nmost of a request's CPU is the kernel's TCP work done "
           "in the writer's context) and its\n`context-switches` (each time it went to sleep, in "
           "`epoll_wait`, and was woken). Raw counts:\n`$BENCH_WORK/syscalls/`.\n\n"
           "| proxy | requests | errors | CPU a request | context switches a request | "
           "system calls per request | "
           + " | ".join(f"`{n}`" for n in shown) + " | other |\n|---|---|---|---|---|---|"
           + "---|" * (len(shown) + 1) + "\n"]
    for label, requests, errors, counts in rows:
        per = {n: counts.get(n, 0) / max(requests, 1)
               for n in ["all", "task-clock", "context-switches", *SYSCALL_NAMES]}
        other = per["all"] - sum(per[n] for n in shown)
        out.append(f"| {label} | {requests} | {errors} | {per['task-clock'] * 1000:.1f} µs"
                   f" | {per['context-switches']:.2f} | {per['all']:.2f} | "
                   + " | ".join(f"{per[n]:.2f}" for n in shown) + f" | {other:.2f} |\n")
    return "".join(out)



# ---------------------------------------------------------------------------------------------
# sched: what runs on the server CPU while a proxy serves 5,000 RPS


SCHED_RATE = 5000
SCHED_SECONDS = float(os.environ.get("BENCH_SCHED_SECONDS", 10))
SCHED_ROUNDS = int(os.environ.get("BENCH_SCHED_ROUNDS", 2))
SCHED_CONTENDERS = ["nginx", "haproxy", "palisade-empty", "palisade-1M"]
# A run of the CPU this long holds every request that arrives meanwhile (at 5,000 RPS one
# every 200 µs): the stalls that make a p99.
STALL_MS = 0.5
_TIMEHIST = re.compile(r"^\s*([0-9.]+)\s+\[(\d+)\]\s+(.*?)(?:\[(\d+)(?:/(\d+))?\])?"
                       r"\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$")


def timehist_rows(text):
    """`perf sched timehist` lines as (task, tid, pid, wait_ms, delay_ms, run_ms): one row per
    time a task left the CPU, with how long it had waited to be woken (wait), then to get the
    CPU once woken (delay), then ran. The idle task is left out; a thread's pid is its process's."""
    rows = []
    for line in text.splitlines():
        m = _TIMEHIST.match(line)
        if not m or m.group(3).strip() == "<idle>":
            continue
        tid = int(m.group(4)) if m.group(4) else None
        pid = int(m.group(5)) if m.group(5) else tid
        rows.append((m.group(3).strip(), tid, pid, float(m.group(6)), float(m.group(7)),
                     float(m.group(8))))
    return rows


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else None


def sched_roles(rows, proxy_pids, app_pids):
    """The rows of one trace split into the proxy's (every thread of its processes), the
    application's, and every other task's by name (a kernel worker's name without its CPU)."""
    roles = {"proxy": [], "app": [], "others": {}}
    for row in rows:
        task, _, pid = row[0], row[1], row[2]
        if pid in proxy_pids:
            roles["proxy"].append(row)
        elif pid in app_pids:
            roles["app"].append(row)
        else:
            name = re.sub(r"/\d+:.*", "", task) if task.startswith("kworker") else task
            roles["others"].setdefault(name, []).append(row)
    return roles


def sched_stats(rows):
    runs = [r[5] for r in rows]
    delays = [r[4] for r in rows]
    return {"runs": len(runs), "cpu_ms": sum(runs), "run_p50": quantile(runs, 0.5),
            "run_p99": quantile(runs, 0.99), "run_p999": quantile(runs, 0.999),
            "run_max": max(runs, default=None), "stalls": sum(1 for x in runs if x > STALL_MS),
            "delay_p99": quantile(delays, 0.99), "delay_max": max(delays, default=None)}


def sched_trace(name, pids, app_pids, port, rnd, out_dir):
    """One trace: `perf sched record` of the server CPU while loadgen sends SCHED_RATE requests
    a second to `name` for SCHED_SECONDS. Returns loadgen's result and the trace's rows by role."""
    data = out_dir / f"{name}-{rnd}.data"
    load = ["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), "--addr", f"127.0.0.1:{port}",
            *BENCH_REQUEST, "--rate", str(SCHED_RATE), "--connections", str(CONNECTIONS)]
    sh([*load, "--duration", "1", "--warmup", "0"])  # both hops' connections are open
    # perf's own process (it copies the trace out) runs on loadgen's CPU, not the traced one.
    perf = subprocess.Popen(["taskset", "-c", LOAD_CPU, "perf", "sched", "record",
                             "-C", SERVER_CPU, "-o", str(data),
                             "--", "sleep", str(SCHED_SECONDS + 1.5)],
                            stdout=subprocess.DEVNULL, stderr=open(out_dir / "perf.err", "a"))
    time.sleep(0.5)
    r = json.loads(sh([*load, "--duration", str(SCHED_SECONDS), "--warmup", "0",
                       "--label", name]))
    if perf.wait(timeout=60) != 0 or not data.exists():
        raise RuntimeError(f"perf sched record failed (exit {perf.returncode}): see "
                           f"{out_dir}/perf.err (it needs root or kernel.perf_event_paranoid <= -1)")
    text = sh(["perf", "sched", "timehist", "-i", str(data)])
    data.unlink()
    # Every thread of the proxy: the sidecar's blocking-pool threads come and go.
    rows = timehist_rows(text)
    roles = sched_roles(rows, set(pids), set(app_pids))
    if not roles["proxy"]:
        raise RuntimeError(f"perf sched saw nothing of {name} (pids {pids}) on CPU {SERVER_CPU}; "
                           f"see {out_dir}/perf.err (needs root or perf_event_paranoid <= -1)")
    return r, roles


def sched():
    if not shutil.which("perf"):
        sys.exit("sched needs perf (Debian: apt-get install linux-perf; bench/setup.sh does)")
    m = machine()
    m["sidecar"] = sidecar_build()
    m["sidecar_sha256"] = sha256_16(sidecar_binary())
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script stays off the traced CPU
    except OSError:
        pass
    prepare_lists()
    out_dir = WORK / "sched"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    procs = Procs()
    traces = []
    try:
        start_all(procs)
        app_pids = procs.pids("app")
        for rnd in range(SCHED_ROUNDS):
            order = SCHED_CONTENDERS if rnd % 2 == 0 else SCHED_CONTENDERS[::-1]
            for name in order:
                r, roles = sched_trace(name, procs.pids(name), app_pids, CONTENDERS[name][0],
                                       rnd, out_dir)
                traces.append((name, r, roles))
                log(f"sched round {rnd} {name}: p99 {r['p99_us']:.0f} µs, "
                    f"{len(roles['proxy'])} runs of the proxy")
    finally:
        procs.stop_all()
    summary = sched_summary(traces)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    write_sched(m, summary)


def sched_summary(traces):
    """Per contender, its traces pooled: loadgen's percentiles (medians over the traces), and
    the proxy's, the application's and the other tasks' scheduling statistics."""
    out = {}
    for name in dict.fromkeys(n for n, _, _ in traces):
        mine = [(r, roles) for n, r, roles in traces if n == name]
        others = {}
        for _, roles in mine:
            for task, rows in roles["others"].items():
                others.setdefault(task, []).extend(rows)
        completed = sum(r["completed"] for r, _ in mine)
        out[name] = {
            "traces": len(mine), "completed": completed,
            "errors": sum(r["errors"] for r, _ in mine),
            "p50_us": median([r["p50_us"] for r, _ in mine]),
            "p99_us": median([r["p99_us"] for r, _ in mine]),
            "p999_us": median([r.get("p999_us") for r, _ in mine]),
            "proxy": sched_stats([row for _, roles in mine for row in roles["proxy"]]),
            "app": sched_stats([row for _, roles in mine for row in roles["app"]]),
            "others": {task: sched_stats(rows) for task, rows in others.items()},
        }
    return out


def write_sched(m, summary):
    def ms(x):
        return "–" if x is None else f"{x * 1000:.0f} µs" if x < 1 else f"{x:.2f} ms"

    def per_request(st, s):
        return f"{st['cpu_ms'] * 1000 / max(s['completed'], 1):.1f} µs"

    out = [header(f"Scheduling on the server CPU at {SCHED_RATE:,} RPS", m, "python3 bench/bench.py sched",
                  f"- Sidecar: {m['sidecar']} (SHA-256 `{m['sidecar_sha256']}…`).\n"),
           f"Each proxy of the proxy run (same configurations, same application, the servers "
           f"pinned to CPU {SERVER_CPU},\nloadgen to CPU {LOAD_CPU}) serves {SCHED_RATE:,} "
           f"requests a second on {CONNECTIONS} keep-alive connections for "
           f"{SCHED_SECONDS:.0f} s while\n`perf sched record -C {SERVER_CPU}` traces every "
           f"switch of the server CPU, {SCHED_ROUNDS} traces a proxy in alternating\norder; "
           "`perf sched timehist` gives, each time a task leaves the CPU, how long it ran and "
           "how long it\nhad waited for the CPU once woken (its scheduling delay). A run over "
           f"{STALL_MS} ms (a stall) holds every\nrequest that arrives meanwhile (one every "
           f"{1e6 / SCHED_RATE:.0f} µs): a request's p99 is made of these. Nothing here\nis "
           "judged; it says whose CPU time a tail is. Raw summary: `$BENCH_WORK/sched/summary.json`."
           "\n\n## The proxy's own process (every thread)\n\n"
           "| proxy | requests | p50 / p99 / p99.9 (loadgen) | CPU a request | runs | run p50 / "
           "p99 / p99.9 | longest run | runs over 0.5 ms | scheduling delay p99 / longest |\n"
           "|---|---|---|---|---|---|---|---|---|\n"]
    for name, s in summary.items():
        st = s["proxy"]
        out.append(f"| {name} | {s['completed']} | {fmt_us(s['p50_us'])} / {fmt_us(s['p99_us'])}"
                   f" / {fmt_us(s['p999_us'])} | {per_request(st, s)} | {st['runs']} | "
                   f"{ms(st['run_p50'])} / {ms(st['run_p99'])} / {ms(st['run_p999'])} | "
                   f"{ms(st['run_max'])} | {st['stalls']} | {ms(st['delay_p99'])} / "
                   f"{ms(st['delay_max'])} |\n")
    out.append("\n## The application behind it (nginx, static 1 KB)\n\n"
               "| proxy in front | CPU a request | run p99.9 | longest run | runs over 0.5 ms | "
               "scheduling delay p99 / longest |\n|---|---|---|---|---|---|\n")
    for name, s in summary.items():
        st = s["app"]
        out.append(f"| {name} | {per_request(st, s)} | {ms(st['run_p999'])} | "
                   f"{ms(st['run_max'])} | {st['stalls']} | {ms(st['delay_p99'])} / "
                   f"{ms(st['delay_max'])} |\n")
    tasks = sorted({t for s in summary.values() for t in s["others"]},
                   key=lambda t: -max(s["others"].get(t, {}).get("run_max") or 0
                                      for s in summary.values()))
    stalling = [t for t in tasks
                if any(s["others"].get(t, {}).get("stalls") for s in summary.values())]
    out.append("\n## Other tasks on the server CPU\n\nEvery other task that ran on the server CPU "
               f"for more than {STALL_MS} ms at once during some trace: runs over\n{STALL_MS} ms "
               "and the longest, in the traces of each proxy (the same host work falls on every "
               "proxy's\ntraces, as much as their turns allow).\n\n"
               + ("| task | " + " | ".join(summary) + " |\n|---|" + "---|" * len(summary) + "\n"
                  if stalling else "None.\n"))
    for t in stalling:
        cells = []
        for s in summary.values():
            st = s["others"].get(t)
            cells.append("–" if not st else f"{st['stalls']} over 0.5 ms, longest {ms(st['run_max'])}")
        out.append(f"| `{t}` | " + " | ".join(cells) + " |\n")
    (RESULTS / "sched.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'sched.md'}")


def profile():
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("profile needs valgrind (Debian: apt-get install valgrind)")
    m = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    prepare_lists()
    cg = WORK / "callgrind"
    shutil.rmtree(cg, ignore_errors=True)
    cg.mkdir(parents=True)
    (WORK / "tmp").mkdir(parents=True, exist_ok=True)
    base = BASE + 10
    app = APP_PORT
    procs = Procs()
    vg = ["valgrind", "--tool=callgrind"]
    contenders = {
        "nginx": (base + 1, "nginx reverse proxy, keep-alive upstream (one process: "
                  "`master_process off`)"),
        "haproxy": (base + 2, "HAProxy, nbthread 1, http-reuse always"),
        "palisade-empty": (base + 3, "Palisade sidecar, empty policy bundle"),
        "palisade-1M": (base + 4, "Palisade sidecar, 1M prefixes + 1000 actions"),
        # The empty-bundle sidecar again, its load sending a new API key on every request:
        # what a connection carrying many clients (a load balancer's) costs, where the
        # per-connection memo of credential hashes never hits.
        "palisade-keys": (base + 3, "Palisade sidecar, empty policy bundle, a new API key on "
                          "every request (one connection carrying many clients)"),
    }
    # The process each contender's counts are read from, and its load's API key header.
    process = {"palisade-keys": "palisade-empty"}
    key_args = {"palisade-keys": ["--vary-header", "X-Api-Key"]}
    # Beside the profile-guided build, the plain release build of the same source: what the
    # profile saves, and where the instructions go (its functions are not inlined away).
    sidecars = [("palisade-empty", base + 3, "empty", sidecar_binary()),
                ("palisade-1M", base + 4, "big", sidecar_binary())]
    plain = "BENCH_SIDECAR" not in os.environ
    if plain:
        if not (BIN / "palisade-sidecar").exists():
            sys.exit(f"no plain build at {BIN / 'palisade-sidecar'}: cargo build --release "
                     "-p palisade-sidecar (make bench-profile does)")
        sidecars += [("plain-empty", base + 5, "empty", BIN / "palisade-sidecar"),
                     ("plain-1M", base + 6, "big", BIN / "palisade-sidecar")]
        for name, port, _, _ in sidecars[2:]:
            what = contenders[name.replace("plain", "palisade")][1]
            contenders[name] = (port, what.replace("sidecar", "sidecar, plain release build"))
        contenders["plain-keys"] = (base + 5, contenders["palisade-keys"][1].replace(
            "sidecar", "sidecar, plain release build"))
        process["plain-keys"] = "plain-empty"
        key_args["plain-keys"] = key_args["palisade-keys"]
    results = {}
    try:
        for port in [app] + sorted({p for p, _ in contenders.values()}):
            if not port_free(port):
                raise RuntimeError(f"port {port} is in use; stop what holds it")
        start_app(procs, WORK / "www")
        conf = nginx_proxy_conf("cg-nginx", base + 1)
        text = conf.read_text().replace("daemon off;", "daemon off;\nmaster_process off;")
        conf.write_text(text)
        procs.start("nginx", [*vg, f"--callgrind-out-file={cg}/nginx.out",
                              "nginx", "-c", str(conf), "-p", str(WORK)])
        procs.start("haproxy", [*vg, f"--callgrind-out-file={cg}/haproxy.out",
                                "haproxy", "-db", "-f",
                                str(haproxy_conf("cg-haproxy", base + 2, ""))])
        for name, port, bundle, binary in sidecars:
            procs.start(name, [*vg, f"--callgrind-out-file={cg}/{name}.out",
                               *sidecar_argv(binary, port, app, bundle)],
                        env={"RUST_LOG": "warn"})
        wait_http(app)
        for name, (port, _) in contenders.items():
            wait_http(port, timeout=600)  # under valgrind the 1M bundle loads in about a minute
            pid = procs.procs[process.get(name, name)].pid
            keys = key_args.get(name, ["--header", "X-Api-Key: bench-key"])
            # Warm the connections (and the sidecar's upstream connections), then count only
            # the measured requests.
            sh(["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), "--addr", f"127.0.0.1:{port}",
                "--path", "/index.html", "--rate", "200", "--connections", str(CONNECTIONS),
                "--duration", "2", "--warmup", "0", *keys])
            sh(["callgrind_control", "-z", str(pid)])  # zero the counts: only what follows
            out = sh(["taskset", "-c", LOAD_CPU, str(BIN / "loadgen"), "--addr",
                      f"127.0.0.1:{port}", "--path", "/index.html", "--rate",
                      str(PROFILE_REQUESTS_RATE), "--connections", str(CONNECTIONS),
                      "--duration", str(PROFILE_SECONDS), "--warmup", "0",
                      *keys, "--label", name])
            before = set(cg.iterdir())
            sh(["callgrind_control", "-d", str(pid)])
            deadline = time.time() + 60
            dumps = []
            while time.time() < deadline and not dumps:
                dumps = sorted(set(cg.iterdir()) - before)
                time.sleep(0.2)
            if not dumps:
                raise RuntimeError(f"{name}: callgrind wrote no dump in {cg}")
            time.sleep(1)  # let the dump finish writing
            r = json.loads(out)
            requests = r["completed"]
            instr = sum(callgrind_total(d) for d in dumps)
            results[name] = {"requests": requests, "errors": r["errors"], "instr": instr,
                             "dumps": [str(d) for d in dumps]}
            log(f"profile {name}: {instr / max(requests, 1):,.0f} instructions per request "
                f"({requests} requests)")
        of = "plain" if plain else "palisade"
        parts = {n: callgrind_parts(results[f"{of}-{n}"]["dumps"][0],
                                    results[f"{of}-{n}"]["requests"])
                 for n in ("empty", "1M", "keys")}
    finally:
        procs.stop_all()
    (WORK / "profile.json").write_text(json.dumps(results, indent=1))
    per = {n: r["instr"] / max(r["requests"], 1) for n, r in results.items()}
    nginx = per["nginx"]
    out = [header(
        "Instruction profile of one proxy hop (callgrind)", m,
        "python3 bench/bench.py profile",
        "\nInstruction counts do not depend on the load of the machine, which is why this\n"
        f"complements the timing runs of `proxy.md`. The sidecar is {sidecar_build()}.\n")]
    out.append(
        "\n## Setup\n\n"
        f"The app is nginx serving a 1 KB file on 127.0.0.1:{app} (natively). Each proxy runs\n"
        "under `valgrind --tool=callgrind`; once it answers, 2 s of traffic open the\n"
        "connections, the counts are zeroed (`callgrind_control -z`), then\n"
        f"`loadgen --rate {PROFILE_REQUESTS_RATE} --connections {CONNECTIONS} --duration "
        f"{PROFILE_SECONDS}` sends the proxy run's request\n(`GET /index.html` with "
        "`User-Agent` and `X-Api-Key`) and `callgrind_control -d` dumps the\ncounts. "
        "User-space instructions of the proxy process only: the kernel's socket work is not\n"
        "counted (it is about the same for every proxy). The sidecars load the GeoIP and ASN\n"
        "databases of the proxy run. The last row profiles the empty-bundle sidecar again with\n"
        "a new API key on every request (`loadgen --vary-header X-Api-Key`: `v` and a sequence\n"
        "number), as when one connection carries many clients (an ingress or load balancer\n"
        "keeping one connection to the pod): the per-connection memo of credential hashes\n"
        "misses on every request.\n\n")
    out.append("| proxy | requests | errors | instructions | per request | ÷ nginx |\n"
               "|---|---|---|---|---|---|\n")
    for name, (_, desc) in contenders.items():
        r = results[name]
        out.append(f"| {desc} | {r['requests']} | {r['errors']} | {r['instr'] / 1e6:.1f} M | "
                   f"{per[name] / 1000:.1f} k | {per[name] / nginx:.2f}× |\n")
    out.append("\n## Where the sidecar's instructions go (per request)\n\n"
               + ("Of the plain release build: the profile-guided one inlines most of these functions\n"
                  "into their callers, so callgrind cannot count them apart.\n"
                  if plain else "")
               + "Inclusive counts (a part includes what it calls) unless marked self (that function\n"
               "alone, from every caller). Parts overlap, so they do not sum to the total.\n\n"
               "| part | empty bundle | 1M + 1000 actions | empty bundle, a new API key on every "
               "request |\n|---|---|---|---|\n")
    for (label, a), (_, b), (_, k) in zip(parts["empty"], parts["1M"], parts["keys"]):
        out.append(f"| {label} | {a / 1000:.1f} k | {b / 1000:.1f} k | {k / 1000:.1f} k |\n")
    out.append(
        f"| total | {per[f'{of}-empty'] / 1000:.1f} k | {per[f'{of}-1M'] / 1000:.1f} k | "
        f"{per[f'{of}-keys'] / 1000:.1f} k |\n"
        "\nsha256 runs its portable code here: valgrind's virtual CPU does not report the SHA\n"
        "extensions that `sha2` uses natively when the CPU has them (`sha_ni` in "
        "`/proc/cpuinfo`),\nso natively that row is smaller. The callgrind dumps are kept in "
        "`$BENCH_WORK/callgrind/` for\n`callgrind_annotate` or KCachegrind.\n")
    out.append(syscalls([("palisade-empty", sidecar_binary(), "empty",
                          "Palisade sidecar, empty policy bundle"),
                         ("palisade-1M", sidecar_binary(), "big",
                          "Palisade sidecar, 1M prefixes + 1000 actions")]))
    write_keeping_steps(RESULTS / "profile.md", "".join(out))
    log(f"wrote {RESULTS / 'profile.md'}")


STEPS_HEADING = "\n## Issue 23, "


def write_keeping_steps(path, text):
    """Writes a regenerated report, keeping the written record of issue 23's steps that
    follows it in the file (sections headed `## Issue 23, ...`, written by hand)."""
    old = path.read_text() if path.exists() else ""
    at = old.find(STEPS_HEADING)
    path.write_text(text.rstrip("\n") + "\n" + (old[at:] if at >= 0 else ""))


def ratelimit():
    """The rate limiter's cost per check and memory per tracked client -> ratelimit.md."""
    m = machine()
    res, text = cargo_bench("palisade-sidecar", crit_args(), targets=["limit"])
    notes = [line for line in text.splitlines() if line.startswith(("memory:", "contended:"))]
    out = [header("Rate limiter (rateLimit actions) micro-benchmarks", m,
                  "cargo bench -p palisade-sidecar --bench limit"
                  + (" -- " + " ".join(crit_args()) if QUICK else ""))]
    out.append("One check of `sidecar/src/limit.rs` (`Table::check`): hash the client key\n"
               "(SipHash-1-3), find its cell among the 8 of its two buckets, one compare-and-swap;\n"
               "`Instant::now()` is in the loop, as on the request path. Criterion medians; the limit is never\n"
               "reached, so every check is a full update.\n\n"
               "| benchmark | median |\n|---|---|\n")
    out += crit_rows(res)
    out.append("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (RESULTS / "ratelimit.md").write_text("".join(out))
    log(f"wrote {RESULTS / 'ratelimit.md'}")


# ---------------------------------------------------------------------------------------------
# pgo: the sidecar's profile-guided build

# What the instrumented sidecar serves to make its profile: the proxy run's request at its two
# fixed rates and at saturation, then requests the benchmark never sends (a new API key on
# every request; a longer path with a query and percent-escapes that the application answers
# 404, a browser's user agent and a bearer token), with the empty and the 1M bundle.
PGO_LOADS = [
    (BENCH_REQUEST, 1000), (BENCH_REQUEST, 5000), (BENCH_REQUEST, 0),
    (["--path", "/index.html", "--vary-header", "X-Api-Key"], 2000),
    (["--path", "/v1/orders/42/items?page=2&q=a%20b", "--header",
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
      "--header", "Authorization: Bearer pgo-training-token", "--header",
      "Accept: application/json"], 2000),
]


def llvm_profdata():
    """An llvm-profdata of rustc's LLVM major version (rustc reads the indexed profiles of its
    own LLVM only): rustup's llvm-tools component, else Debian's llvm-profdata-N."""
    vv = sh(["rustc", "-vV"])
    major = re.search(r"LLVM version: (\d+)", vv).group(1)
    host = re.search(r"host: (\S+)", vv).group(1)
    sysroot = Path(sh(["rustc", "--print", "sysroot"]).strip())
    for tool in [sysroot / "lib" / "rustlib" / host / "bin" / "llvm-profdata",
                 f"llvm-profdata-{major}", "llvm-profdata"]:
        path = shutil.which(str(tool))
        if path and re.search(rf"LLVM version {major}\.", sh([path, "--version"])):
            return path
    sys.exit(f"pgo needs llvm-profdata of LLVM {major} (rustc's): `rustup component add "
             f"llvm-tools`, or Debian's llvm-{major} (bench/setup.sh installs it)")


def pgo():
    """The sidecar's profile-guided release build at PGO_TARGET: an instrumented build
    (its own target directory, as its flags differ) serves PGO_LOADS, and the merged profile
    steers the optimised build's inlining, branch layout and hot/cold code placement."""
    profdata = llvm_profdata()
    WORK.mkdir(parents=True, exist_ok=True)
    prepare_lists()
    raw = WORK / "pgo-raw"
    flags = os.environ.get("RUSTFLAGS", "")

    def build(target, flag):
        log(f"building the sidecar with {flag} in {target}")
        subprocess.run(["cargo", "build", "--release", "-p", "palisade-sidecar"], cwd=ROOT,
                       check=True, env={**os.environ, "CARGO_TARGET_DIR": str(target),
                                        "RUSTFLAGS": f"{flags} {flag}".strip()})
        return target / "release" / "palisade-sidecar"

    instrumented = build(TARGET / "pgo-generate", f"-Cprofile-generate={raw}")
    shutil.rmtree(raw, ignore_errors=True)  # only the training's counts (not build scripts')
    procs = Procs()
    try:
        (WORK / "tmp").mkdir(parents=True, exist_ok=True)
        start_app(procs, WORK / "www")
        for name, port, bundle in SIDECARS[:2]:
            procs.start(name, sidecar_argv(instrumented, port, APP_PORT, bundle),
                        env={"RUST_LOG": "warn"})
        wait_http(APP_PORT)
        for name, port, _ in SIDECARS[:2]:
            wait_http(port)
            wait_http(port + 1000, "/ready")
            for request, rate in PGO_LOADS:
                loadgen(name, rate, 2.0 if QUICK else 4.0, 0, request, warmup=0.5)
    finally:
        procs.stop_all()  # the profile is written as the sidecar exits
    profile = WORK / "sidecar.profdata"
    sh([profdata, "merge", "-o", str(profile), str(raw)])
    log(f"merged {profile}: {sh([profdata, 'show', str(profile)]).strip().splitlines()[-1]}")
    build(PGO_TARGET, f"-Cprofile-use={profile}")
    log(f"built {PGO_TARGET / 'release' / 'palisade-sidecar'}")


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = {"operator": operator, "proxy": proxy, "memory": memory, "lookup": lookup,
             "detection": detection, "ratelimit": ratelimit}
    if what == "proxy-report":
        proxy_report()
    elif what == "proxy-pool":
        proxy_pool(sys.argv[2:])
    elif what == "profile":
        profile()
    elif what == "pgo":
        pgo()
    elif what == "sched":
        sched()
    elif what == "api-cost":
        api_cost()
    elif what == "reliability":
        reliability()
    elif what == "all":
        for f in steps.values():
            f()
    elif what in steps:
        steps[what]()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
