#!/usr/bin/env bash
# `make demo`: watch Palisade protect a small API, step by step, on a local control plane.
#
#   scripts/demo.sh          build what is missing, start (or reuse) `make up`'s control plane,
#                            start the operator, the demo API and a sidecar, tell the story
#   scripts/demo.sh down     stop the demo's processes (`make down` stops them too)
#
# Two ways, same story:
# - pods, when the control plane runs the one-node cluster (`PALISADE_NODE=on make demo`, or
#   `PALISADE_NODE=on make up` before): images of this checkout's binaries are imported into
#   the node's containerd, the chart installs the operator as a Deployment, the demo API is a
#   Deployment in a namespace labelled for injection (its pod gets the sidecar from the
#   webhook), and requests go through its Service from client addresses added to the node's
#   bridge (198.18.0.200-254, never given to pods).
# - processes, otherwise: the operator, the demo API and its sidecar run as processes, the
#   sidecar wired exactly as the injector wires an injected pod (operator/src/injector/
#   patch.rs): same environment variables, the namespace's `default` ServiceAccount to read
#   the bundle, a token with audience `palisade` for the collector; clients are 127.0.0.N.
#
# Environment:
#   PALISADE_DEMO_MODE=auto|pods|processes  auto (default): pods when a node runs
#   PALISADE_DEMO_NONINTERACTIVE=1  never wait for Enter (no waiting either when stdin is not
#                                   a terminal)
#   PALISADE_DEMO_KUBECONFIG=FILE   use this cluster instead of `make up`'s (the e2e test does;
#                                   the plain KUBECONFIG is ignored on purpose, so the demo
#                                   never lands on the cluster your shell points at). The
#                                   demo's processes stop when the script ends.
#   PALISADE_DEMO_KUBECTL=FILE      the kubectl to use (default: the one `make controlplane`
#                                   builds)
#   PALISADE_DEMO_PREBUILT=1        do not run cargo build; use the binaries already built
#   PALISADE_DEMO_BIN_DIR=DIR       where the binaries are (default $CARGO_TARGET_DIR/debug)
#   PALISADE_DEMO_NODE_DIR=DIR      with PALISADE_DEMO_KUBECONFIG: the directory of that
#                                   cluster's node (`palisade_e2e::Node::dir`), for pods
#   PALISADE_CACHE, CARGO_TARGET_DIR  as for make
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PALISADE_CACHE=${PALISADE_CACHE:-$HOME/.cache/palisade}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PALISADE_CACHE/target}
CARGO=${CARGO:-cargo}
NS=demo
OP_NS=palisade-system
TARGET=${PALISADE_DEMO_BIN_DIR:-$CARGO_TARGET_DIR/debug}
EXTERNAL=${PALISADE_DEMO_KUBECONFIG:+1}
UP_DIR=$PALISADE_CACHE/up
if [ -n "$EXTERNAL" ]; then
  STATE=${PALISADE_DEMO_STATE:-$(mktemp -d "${TMPDIR:-/tmp}/palisade-demo.XXXXXX")}
else
  STATE=$UP_DIR/demo
fi

# ---------------------------------------------------------------------------- output helpers
if [ -t 1 ]; then
  B=$'\e[1m' DIM=$'\e[2m' G=$'\e[32m' R=$'\e[31m' Y=$'\e[33m' C=$'\e[36m' N=$'\e[0m'
else
  B='' DIM='' G='' R='' Y='' C='' N=''
fi
say() { printf '%s\n' "$*"; }
progress() { printf '%s==> %s%s\n' "$DIM" "$*" "$N" >&2; }
warn() { printf '%s%s%s\n' "$Y" "$*" "$N"; }
die() {
  printf '%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2
  printf 'logs: %s/*.log\n' "$STATE" >&2
  exit 1
}
step() {
  printf '\n%s━━ %s ━━%s\n' "$B" "$*" "$N"
}
pause() {
  if [ -t 0 ] && [ -z "${PALISADE_DEMO_NONINTERACTIVE:-}" ]; then
    read -r -p "${DIM}press Enter to continue${N} " _
  fi
}

# ---------------------------------------------------------------------------- processes
pids_file() { printf '%s/pids' "$STATE"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Stops the processes recorded in $STATE/pids (reverse start order), SIGKILL after 10 s.
stop_demo() {
  local f pids=() p
  f=$(pids_file)
  [ -f "$f" ] || return 0
  read -r -a pids <"$f" || true
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do alive "${pids[i]}" && kill "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local left=0
    for p in "${pids[@]}"; do alive "$p" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do alive "$p" && kill -9 "$p" 2>/dev/null || true; done
  rm -f "$f"
  # Forget them in `make up`'s list too, so a later `make down` never signals a reused pid.
  if [ -z "$EXTERNAL" ] && [ -f "$UP_DIR/pids" ]; then
    local keep=() all=() q
    all=($(cat "$UP_DIR/pids"))
    for q in "${all[@]}"; do [[ " ${pids[*]} " == *" $q "* ]] || keep+=("$q"); done
    printf '%s ' "${keep[@]}" >"$UP_DIR/pids"
  fi
}

# Starts a process in its own session (Ctrl-C in the demo does not stop it) with its log in
# $STATE/<name>.log, and records its pid for `scripts/demo.sh down`; with `make up`'s control
# plane also in $PALISADE_CACHE/up/pids, so that `make down` stops it first.
spawn() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$STATE/$name.log" 2>&1 &
  local pid=$!
  printf '%s ' "$pid" >>"$(pids_file)"
  if [ -z "$EXTERNAL" ]; then printf ' %s' "$pid" >>"$UP_DIR/pids"; fi
  eval "PID_${name//-/_}=$pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port VAR PORT: sets VAR to a free loopback port, PORT if it is free (and not picked
# before), else a random one.
pick_port() {
  local p=$2
  while ! port_free "$p" || [[ " ${PICKED:-} " == *" $p "* ]]; do p=$((20000 + RANDOM % 40000)); done
  PICKED="${PICKED:-} $p"
  printf -v "$1" '%s' "$p"
}

# Waits until `curl -sf URL` succeeds, or fails naming the log of process NAME.
wait_http() {
  local url=$1 name=$2 pidvar="PID_${2//-/_}"
  for _ in $(seq 150); do
    curl -sf -o /dev/null "$url" && return 0
    alive "${!pidvar}" || die "$name exited; see $STATE/$name.log:
$(tail -n 20 "$STATE/$name.log")"
    sleep 0.2
  done
  die "$name did not answer $url within 30 s; see $STATE/$name.log"
}

if [ "${1:-}" = down ]; then
  if [ -n "$EXTERNAL" ] && [ -z "${PALISADE_DEMO_STATE:-}" ]; then
    die "with PALISADE_DEMO_KUBECONFIG, set PALISADE_DEMO_STATE to the demo's state directory"
  fi
  stop_demo
  say "stopped the demo's processes"
  if [ "$(cat "$STATE/mode" 2>/dev/null)" = pods ]; then
    KUBECTL=${PALISADE_DEMO_KUBECTL:-$(bash tests/e2e/controlplane/build.sh)/kubectl}
    KC=${PALISADE_DEMO_KUBECONFIG:-$UP_DIR/admin.kubeconfig}
    "$KUBECTL" --kubeconfig "$KC" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null
    "$KUBECTL" --kubeconfig "$KC" delete -f "$STATE/chart.yaml" --ignore-not-found --wait=false >/dev/null
    rm -f "$STATE/mode"
    say "deleted namespace $NS and the chart's objects"
  fi
  exit 0
fi
[ -z "${1:-}" ] || die "usage: scripts/demo.sh [down]"
trap 'die "line $LINENO: $BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------- build
for tool in curl setsid; do
  command -v "$tool" >/dev/null || die "$tool is not installed; install it and re-run"
done
if [ -n "${PALISADE_DEMO_KUBECTL:-}" ]; then
  KUBECTL=$PALISADE_DEMO_KUBECTL
else
  progress "control plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl):" \
    "built once into $PALISADE_CACHE/bin, the first build takes about 13 minutes"
  BIN=$(bash tests/e2e/controlplane/build.sh)
  KUBECTL=$BIN/kubectl
fi
if [ -z "${PALISADE_DEMO_PREBUILT:-}" ]; then
  progress "building the operator, the sidecar and the demo API (cargo, into $CARGO_TARGET_DIR)"
  "$CARGO" build -p palisade-operator -p palisade-sidecar -p palisade-demo-api \
    -p kubectl-palisade -p palisade-e2e --bin palisade-cluster
fi
for b in palisade-operator palisade-sidecar palisade-demo-api kubectl-palisade; do
  [ -x "$TARGET/$b" ] || die "$TARGET/$b is missing; build it with cargo build -p $b"
done

# ---------------------------------------------------------------------------- cluster
if [ -n "$EXTERNAL" ]; then
  KC=$PALISADE_DEMO_KUBECONFIG
  trap 'stop_demo' EXIT
else
  if [ "${PALISADE_NODE:-off}" != off ]; then
    progress "PALISADE_NODE=$PALISADE_NODE: a new control plane also starts the one-node cluster;" \
      "its binaries (kubelet, containerd, runc, CNI) are built once, about 18 minutes the first time"
  fi
  progress "starting the local control plane (make up; a running one is reused)"
  "$TARGET/palisade-cluster" up >/dev/null
  KC=$UP_DIR/admin.kubeconfig
fi
mkdir -p "$STATE"
stop_demo # a previous `make demo`'s processes
k() { "$KUBECTL" --kubeconfig "$KC" "$@"; }
# Prints a kubectl command as the reader would type it, then runs it.
show() {
  printf '%s$ kubectl %s%s\n' "$C" "$*" "$N"
  k "$@"
}
# `kubectl palisade ...`, the plugin of this checkout (kubectl finds it on the PATH), shown
# and run.
show_plugin() {
  printf '%s$ kubectl palisade %s%s\n' "$C" "$*" "$N"
  KUBECONFIG="$KC" PATH="$TARGET:$PATH" "$KUBECTL" palisade "$@"
}
# `kubectl apply` of a manifest given on stdin, shown with the manifest.
show_apply() {
  local yaml
  yaml=$(cat)
  printf '%s$ kubectl apply --server-side -n %s -f - <<EOF%s\n%s\n%sEOF%s\n' \
    "$C" "$NS" "$N" "$yaml" "$C" "$N"
  k apply --server-side -n "$NS" -f - <<<"$yaml"
}

# ---------------------------------------------------------------------------- mode
# Pods when a node runs: `make up`'s (PALISADE_NODE=on), or PALISADE_DEMO_NODE_DIR's.
if [ -n "$EXTERNAL" ]; then
  NODE_DIR=${PALISADE_DEMO_NODE_DIR:-}
else
  NODE_DIR=$("$TARGET/palisade-cluster" node-dir 2>/dev/null || true)
fi
MODE=${PALISADE_DEMO_MODE:-auto}
case $MODE in
  auto) if [ -n "$NODE_DIR" ]; then MODE=pods; else MODE=processes; fi ;;
  pods) [ -n "$NODE_DIR" ] || die "PALISADE_DEMO_MODE=pods needs a node: make down, then PALISADE_NODE=on make demo" ;;
  processes) ;;
  *) die "PALISADE_DEMO_MODE=$MODE: expected auto, pods or processes" ;;
esac
if [ "$MODE" = processes ] && [ -z "$EXTERNAL" ] && [ "${PALISADE_NODE:-off}" != off ]; then
  warn "the running control plane has no node (PALISADE_NODE applies when make up starts it):"
  warn "make down, then PALISADE_NODE=$PALISADE_NODE make demo, for real pods"
fi
# The clients: distinct source addresses, so the sidecar tells them apart. On the node they
# are added to its bridge (inside the pod CIDR, so kube-proxy does not masquerade them).
if [ "$MODE" = pods ]; then
  P=198.18.0
  BENIGN=$P.202 FLAGGED=$P.203 OTHERS="$P.204 $P.205" DENIED=$P.206 TTL_CLIENT=$P.207
  FLOODER=$P.209 RANGE=$P.240/28 IN_RANGE=$P.241
else
  P=127.0.0
  BENIGN=$P.2 FLAGGED=$P.3 OTHERS="$P.4 $P.5" DENIED=$P.66 TTL_CLIENT=$P.77
  FLOODER=$P.9 RANGE=$P.128/25 IN_RANGE=$P.200
fi

start_processes() {
  progress "installing the CRDs and the operator's RBAC (config/rbac)"
  k apply --server-side --force-conflicts -f crds/ >/dev/null
  k wait --for condition=established --timeout=60s -f crds/ >/dev/null
  k create namespace "$OP_NS" --dry-run=client -o yaml | k apply --server-side -f - >/dev/null
  k apply --server-side --force-conflicts -f config/rbac/ >/dev/null

  # A kubeconfig for the cluster of $KC that authenticates with a token of ServiceAccount NS/SA.
  sa_kubeconfig() {
    local ns=$1 sa=$2 out=$3 tok
    for _ in $(seq 50); do
      tok=$(k -n "$ns" create token "$sa" --duration=24h 2>/dev/null) && break
      sleep 0.2 # the ServiceAccount controller creates `default` shortly after the namespace
    done
    [ -n "${tok:-}" ] || die "cannot create a token for ServiceAccount $ns/$sa"
    local admin
    admin=$(k config view --minify -o jsonpath='{.contexts[0].context.user}')
    (umask 077 && k config view --raw --minify --flatten >"$out")
    "$KUBECTL" --kubeconfig "$out" config set-credentials "$ns-$sa" --token="$tok" >/dev/null
    "$KUBECTL" --kubeconfig "$out" config set-context --current --user="$ns-$sa" >/dev/null
    "$KUBECTL" --kubeconfig "$out" config delete-user "$admin" >/dev/null
  }

  # The collector serves plain HTTP on loopback here: in a cluster it serves HTTPS with the
  # operator's certificate and injected sidecars get its CA (--collector-ca); on 127.0.0.1 there
  # is no Service name for that certificate to carry.
  progress "starting the operator as a process, as ServiceAccount $OP_NS/palisade-operator"
  sa_kubeconfig "$OP_NS" palisade-operator "$STATE/operator.kubeconfig"
  pick_port OP_ADMIN 18080
  pick_port OP_WEBHOOK 18443
  pick_port OP_COLLECTOR 18444
  spawn operator env RUST_LOG="${RUST_LOG:-info}" KUBECONFIG="$STATE/operator.kubeconfig" \
    "$TARGET/palisade-operator" --namespace "$OP_NS" --identity palisade-demo \
    --lease-name palisade-demo --lease-duration 3 --log-format plain \
    --admin-addr "127.0.0.1:$OP_ADMIN" --webhook-addr "127.0.0.1:$OP_WEBHOOK" \
    --collector-listen "127.0.0.1:$OP_COLLECTOR" --detection-interval 1s \
    --collector-plain-http=true
  wait_http "http://127.0.0.1:$OP_ADMIN/ready" operator

  progress "creating namespace $NS; starting the demo API and its sidecar as processes"
  # Afresh: a previous run's actions, incidents and detected clients go with the namespace.
  k delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null
  k create namespace "$NS" >/dev/null
  sa_kubeconfig "$NS" default "$STATE/sidecar.kubeconfig"
  # The projected token the injector mounts for the collector (audience palisade).
  (umask 077 && k -n "$NS" create token default --audience palisade --duration=24h >"$STATE/token")
  pick_port APP 18081
  pick_port PROXY 15080
  pick_port SC_ADMIN 15081
  spawn demo-api "$TARGET/palisade-demo-api" --listen "127.0.0.1:$APP"
  wait_http "http://127.0.0.1:$APP/healthz" demo-api
  # The injector's environment (patch.rs), with loopback addresses instead of 0.0.0.0 and no
  # mounted bundle volume (no kubelet: the sidecar reads the bundle through the API only).
  # POD_NAME looks like a Deployment's pod: the sidecar names the workload (demo-api) from it.
  spawn sidecar env POD_NAMESPACE="$NS" POD_NAME=demo-api-7f9c6d5b8-q2x4z \
    PALISADE_LISTEN="127.0.0.1:$PROXY" PALISADE_ADMIN_LISTEN="127.0.0.1:$SC_ADMIN" \
    PALISADE_UPSTREAM_PORT="$APP" PALISADE_BUNDLE_CONFIGMAP=palisade-bundle \
    PALISADE_TRUSTED_HOPS=0 PALISADE_TOKEN_PATH="$STATE/token" \
    PALISADE_COLLECTOR_ADDR="127.0.0.1:$OP_COLLECTOR" \
    PALISADE_LOG_FORMAT=plain \
    KUBECONFIG="$STATE/sidecar.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
    "$TARGET/palisade-sidecar"
  # /live, not /ready: a sidecar is Ready only once it holds a bundle, and this namespace gets
  # one with its first action (there is no injected pod here to ask for an empty one).
  wait_http "http://127.0.0.1:$SC_ADMIN/live" sidecar
  API=http://127.0.0.1:$PROXY
}

# The node's bridge, the collector Service's fixed ClusterIP (the node has no cluster DNS: the
# sidecars are told the address, and the operator's certificate covers it; see docs/node.md).
BRIDGE=palisade0
COLLECTOR_IP=198.19.0.10

# image BINARY: the local image reference of a binary, tagged with its hash, so that a
# rebuilt binary is a new image and the Deployments roll.
image_ref() {
  local h
  h=$(sha256sum "$TARGET/$1" | cut -c1-12)
  printf 'palisade.local/%s:dev-%s' "$1" "$h"
}

start_pods() {
  [ "$(id -u)" = 0 ] || die "the demo on the node adds client addresses to its bridge: run it as root"
  command -v ip >/dev/null || die "ip (iproute2) is not installed; install it and re-run"
  local helm=${PALISADE_DEMO_HELM:-$(dirname "$KUBECTL")/helm} b ref
  [ -x "$helm" ] || die "$helm is missing; build it with make controlplane"
  OP_IMAGE=$(image_ref palisade-operator)
  SIDECAR_IMAGE=$(image_ref palisade-sidecar)
  API_IMAGE=$(image_ref palisade-demo-api)
  progress "importing images of the operator, the sidecar and the demo API into the node's" \
    "containerd (no registry; pods use imagePullPolicy: Never)"
  for b in palisade-operator palisade-sidecar palisade-demo-api; do
    ref=$(image_ref "$b")
    PALISADE_NODE_DIR=$NODE_DIR "$TARGET/palisade-cluster" image "$ref" "$TARGET/$b" \
      >"$STATE/image-$b.log" 2>&1 || die "importing $ref: $(cat "$STATE/image-$b.log")"
  done

  local kv
  kv=$(k get --raw /version | sed -n 's/.*"gitVersion": *"v\([^"]*\)".*/\1/p')
  progress "installing the chart: the operator as a Deployment in $OP_NS, the injector webhook," \
    "the collector Service on $COLLECTOR_IP"
  "$helm" template palisade charts/palisade -n "$OP_NS" --kube-version "$kv" \
    --set image.repository="${OP_IMAGE%:*}" --set image.tag="${OP_IMAGE##*:}" \
    --set image.pullPolicy=Never \
    --set sidecar.image.repository="${SIDECAR_IMAGE%:*}" \
    --set sidecar.image.tag="${SIDECAR_IMAGE##*:}" --set sidecar.image.pullPolicy=Never \
    --set replicaCount=1 --set podDisruptionBudget.enabled=false --set logFormat=plain \
    --set collector.service.clusterIP="$COLLECTOR_IP" \
    --set 'extraArgs={--detection-interval=1s}' >"$STATE/chart.yaml" 2>"$STATE/helm.log" ||
    die "helm template: $(cat "$STATE/helm.log")"
  k create namespace "$OP_NS" --dry-run=client -o yaml | k apply --server-side -f - >/dev/null
  # A ClusterIP cannot change: a collector Service from an install without the fixed address
  # goes first.
  local svc=palisade-collector cur
  cur=$(k -n "$OP_NS" get service "$svc" -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
  if [ -n "$cur" ] && [ "$cur" != "$COLLECTOR_IP" ]; then
    k -n "$OP_NS" delete service "$svc" >/dev/null
  fi
  k apply --server-side --force-conflicts --field-manager=palisade-demo -n "$OP_NS" \
    -f "$STATE/chart.yaml" >"$STATE/apply.log" 2>&1 ||
    die "applying the chart: $(tail -n 5 "$STATE/apply.log")"
  printf 'pods\n' >"$STATE/mode"
  local op
  op=$(k -n "$OP_NS" get deployment -l app.kubernetes.io/component=operator -o name)
  [ -n "$op" ] || die "the chart rendered no operator Deployment"
  progress "waiting for the operator's pod ($op)"
  k -n "$OP_NS" rollout status "$op" --timeout=300s >/dev/null ||
    die "the operator did not become ready: $(k -n "$OP_NS" get pods -o wide 2>&1)
$(k -n "$OP_NS" logs "$op" --tail=20 2>&1)"

  progress "creating namespace $NS afresh"
  k delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null
  k create namespace "$NS" >/dev/null
  progress "adding the demo's client addresses to the node's bridge $BRIDGE"
  local a
  for a in $BENIGN $FLAGGED $DENIED $IN_RANGE $FLOODER $OTHERS $TTL_CLIENT; do
    ip addr replace "$a/32" dev "$BRIDGE" 2>"$STATE/ip.log" ||
      die "ip addr replace $a/32 dev $BRIDGE: $(cat "$STATE/ip.log")"
  done
}

# Deploys the demo API in the namespace opted in to injection, and waits until its pod runs
# with the sidecar and its Service answers.
deploy_api() {
  step "0. The demo API runs in a pod; the operator's webhook injects the sidecar"
  show label namespace "$NS" palisade.dev/inject=enabled
  show_apply <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo-api
spec:
  replicas: 1
  selector:
    matchLabels: {app: demo-api}
  template:
    metadata:
      labels: {app: demo-api}
    spec:
      enableServiceLinks: false
      containers:
        - name: api
          image: $API_IMAGE
          imagePullPolicy: Never
          args: [--listen, 0.0.0.0:8081]
          ports: [{name: http, containerPort: 8081}]
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 2
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
---
apiVersion: v1
kind: Service
metadata:
  name: demo-api
spec:
  selector: {app: demo-api}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
  k -n "$NS" rollout status deployment/demo-api --timeout=300s >/dev/null ||
    die "the demo API did not become ready: $(k -n "$NS" get pods -o wide 2>&1)
$(k -n "$NS" get events --sort-by=.lastTimestamp 2>&1 | tail -n 10)"
  show -n "$NS" get pods -o wide
  printf '%s$ kubectl -n %s get pod -l app=demo-api -o jsonpath=…%s\n' "$C" "$NS" "$N"
  k -n "$NS" get pod -l app=demo-api -o \
    jsonpath='{range .items[0].spec.initContainers[*]}  init container {.name} (restartPolicy {.restartPolicy}): {.image}{"\n"}{end}{range .items[0].spec.containers[*]}  container {.name}: {.image}{"\n"}{end}'
  say "READY 2/2: the API container and the injected ${B}palisade-sidecar${N} (a native sidecar:"
  say "an init container that keeps running). The Service's targetPort ${B}http${N} is now the"
  say "sidecar's port; it forwards to the API on 127.0.0.1:8081 inside the pod."
  local ip
  ip=$(k -n "$NS" get service demo-api -o jsonpath='{.spec.clusterIP}')
  API=http://$ip
  # kube-proxy programs the Service about a second after the endpoint is ready.
  for _ in $(seq 150); do
    curl -sf -o /dev/null --interface "$BENIGN" "$API/healthz" && break
    sleep 0.2
  done
  SC_POD_IP=$(k -n "$NS" get pod -l app=demo-api -o jsonpath='{.items[0].status.podIP}')
  pause
}

rm -f "$STATE/mode"
if [ "$MODE" = pods ]; then start_pods; else start_processes; fi

# ---------------------------------------------------------------------------- requests
# req IP METHOD PATH [curl args...]: one request from client address IP (the sidecar sees
# the socket's address: 127.0.0.0/8 is all loopback on Linux; on the node, addresses on its
# bridge); prints it and its answer and sets CODE and BODY.
req() {
  local ip=$1 method=$2 path=$3 out
  shift 3
  out=$(curl -sS --interface "$ip" -X "$method" -o - -w '\n%{http_code}' "$@" "$API$path") ||
    die "curl $API$path from $ip failed"
  CODE=${out##*$'\n'}
  BODY=${out%$'\n'*}
  BODY=${BODY%$'\n'}
}
show_req() {
  local ip=$1 method=$2 path=$3
  printf '%s$ curl --interface %s -X %s %s%s' "$C" "$ip" "$method" "$API$path" "$N"
  shift 3
  [ $# -gt 0 ] && printf '%s %s%s' "$C" "$*" "$N"
  printf '\n'
  req "$ip" "$method" "$path" "$@"
  local color=$G
  [ "$CODE" -ge 400 ] && color=$R
  local shown=$BODY
  [ ${#shown} -gt 400 ] && shown="${shown:0:40}… (${#BODY} bytes)"
  printf '  %sHTTP %s%s  %s\n' "$color" "$CODE" "$N" "$shown"
}
# await IP PATH CODE [SECONDS]: repeats the request until it answers CODE, then shows it.
await() {
  local ip=$1 path=$2 want=$3 secs=${4:-30}
  for _ in $(seq $((secs * 5))); do
    req "$ip" GET "$path"
    [ "$CODE" = "$want" ] && break
    sleep 0.2
  done
  show_req "$ip" GET "$path"
  [ "$CODE" = "$want" ] || die "expected HTTP $want from $ip within ${secs}s, got $CODE"
}

# ---------------------------------------------------------------------------- the story
if [ "$MODE" = pods ]; then
  cat <<EOF

${B}Palisade demo${N}, on the node: the operator runs as a Deployment (installed from the chart),
the demo API as a Deployment in namespace $NS, opted in to injection; the Palisade sidecar
is added to its pod by the operator's webhook. Requests go to the API's Service.
Clients are told apart by their address: curl --interface $P.N, addresses added to the
node's bridge $BRIDGE.
EOF
  pause
  deploy_api
else
  cat <<EOF

${B}Palisade demo${N}
The demo API listens on 127.0.0.1:$APP. In front of it, the Palisade sidecar listens on
$API, like the sidecar the operator injects into a pod. There is no node here
(PALISADE_NODE=on make demo starts one), so both run as processes, wired exactly as the
injector wires an injected pod; the sidecar reads its policy from the Kubernetes API as
ServiceAccount $NS/default.
Clients are told apart by their address: curl --interface $P.N.
EOF
  pause
fi

step "1. Benign traffic goes through"
show_req "$BENIGN" GET /
show_req "$BENIGN" POST /login -d username=demo -d password=demo
show_req "$BENIGN" POST /oauth/token -d grant_type=client_credentials
show_req "$BENIGN" GET /static/logo.png
say "No SecurityAction exists yet, so the sidecar forwards everything."
pause

step "2. Flag: the API sees a header for a suspicious client"
show_apply <<EOF
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: flag-partner-scraper
spec:
  flag:
    headers:
      - name: x-palisade-flag
        value: suspected-scraper
  conditions:
    ipRanges: [$FLAGGED]
EOF
say "The operator compiles the namespace's actions into the bundle ConfigMap; the sidecar"
say "watches it and swaps the policy in within a second or two."
for _ in $(seq 150); do
  req "$FLAGGED" GET /headers
  [[ "$BODY" == *x-palisade-flag* ]] && break
  sleep 0.2
done
show_req "$FLAGGED" GET /headers
[[ "$BODY" == *x-palisade-flag* ]] || die "the flag header did not reach the API"
say "The API received ${B}x-palisade-flag: suspected-scraper${N} (and x-forwarded-for: $FLAGGED)."
show_req "$BENIGN" GET /headers
say "Other clients are not flagged."
show -n "$NS" get securityactions
pause

step "3. Deny by IP list: 403 from the sidecar, the API never sees the request"
show_apply <<EOF
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: deny-bad-ips
spec:
  deny:
    status: 403
    contentType: application/json
    body: '{"error":"forbidden"}'
  conditions:
    ipRanges: [$DENIED, $RANGE]
EOF
await "$DENIED" / 403
show_req "$IN_RANGE" POST /login -d username=demo -d password=demo
show_req "$BENIGN" GET /
say "Why? ${B}kubectl palisade explain${N} evaluates a request on the bundle the sidecar enforces:"
show_plugin explain -n "$NS" --ip "$IN_RANGE" --path /login --method POST
pause

step "4. A flood from one client is detected, and a detectedBy deny stops it"
show_apply <<'EOF'
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata:
  name: flooder
spec:
  type: Flooder
  flooder:
    window: 1m
    minSharePercent: 50
    minRequests: 100
    minActiveClients: 1
  detectionTtl: 10m
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: deny-detected-clients
spec:
  deny:
    status: 403
    contentType: application/json
    body: '{"error":"forbidden","reason":"abusive traffic detected"}'
  conditions:
    detectedBy: [flooder]
EOF
say "1200 requests from $FLOODER (a flooder; the Flooder rule also waits for 1000 requests"
say "in the namespace's window before it judges shares), a few from ordinary clients:"
printf '%s$ for i in $(seq 1200); do curl --interface %s %s/; done%s\n' "$C" "$FLOODER" "$API" "$N"
urls=$(for _ in $(seq 1200); do printf 'url = "%s/"\noutput = "/dev/null"\n' "$API"; done)
codes=$(curl -s --interface "$FLOODER" -w '%{http_code}\n' -K - <<<"$urls" | sort | uniq -c)
printf '  %s\n' "$codes"
for ip in $BENIGN $OTHERS; do req "$ip" GET /; done
say "The sidecar reports window summaries to the operator's collector, which runs the rules."
for _ in $(seq 300); do
  [ -n "$(k -n "$NS" get securityincidents -o name 2>/dev/null)" ] && break
  sleep 0.2
done
show -n "$NS" get securityincidents
[ -n "$(k -n "$NS" get securityincidents -o name)" ] || die "no SecurityIncident within 60 s"
show -n "$NS" get events --field-selector involvedObject.kind=SecurityIncident
await "$FLOODER" / 403
show_req "$BENIGN" GET /
say "The flooder is denied by ${B}deny-detected-clients${N}; the others still get 200."
pause

step "5. Pause an action with an annotation: traffic flows; resume: denied again"
show -n "$NS" annotate securityaction deny-bad-ips palisade.dev/paused=true
await "$DENIED" / 200
show -n "$NS" get securityaction deny-bad-ips
show -n "$NS" annotate securityaction deny-bad-ips palisade.dev/paused-
await "$DENIED" / 403
say "To pause every action of a namespace: kubectl annotate namespace $NS palisade.dev/paused=true"
pause

step "6. An action with a ttl expires by itself"
show_apply <<EOF
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: block-for-20s
spec:
  deny:
    status: 429
    body: "slow down\n"
  conditions:
    ipRanges: [$TTL_CLIENT]
  ttl: 20s
EOF
await "$TTL_CLIENT" / 429
show -n "$NS" get securityaction block-for-20s
say "Nobody touches it; about 20 seconds later the operator drops it from the bundle:"
await "$TTL_CLIENT" / 200 60
show -n "$NS" get securityaction block-for-20s

# ---------------------------------------------------------------------------- epilogue
step "Explore"
cat <<EOF
export KUBECONFIG=$KC
alias kubectl=$KUBECTL
kubectl get palisade -n $NS             # actions, rules and incidents
kubectl describe securityaction -n $NS deny-bad-ips
kubectl get events -n $NS
curl --interface $DENIED $API/       # the protected API, as client $DENIED
EOF
if [ "$MODE" = pods ]; then
  OP_POD_IP=$(k -n "$OP_NS" get pods -l app.kubernetes.io/component=operator \
    -o jsonpath='{.items[0].status.podIP}')
  cat <<EOF
kubectl get pods -A -o wide
kubectl logs -n $NS deploy/demo-api -c palisade-sidecar
kubectl logs -n $OP_NS -l app.kubernetes.io/component=operator
Metrics: sidecar  http://$SC_POD_IP:15081/metrics
         operator http://$OP_POD_IP:8080/metrics
EOF
else
  cat <<EOF
Metrics: sidecar  http://127.0.0.1:$SC_ADMIN/metrics
         operator http://127.0.0.1:$OP_ADMIN/metrics
Logs:    $STATE/{operator,sidecar,demo-api}.log
EOF
fi
if [ -n "$EXTERNAL" ]; then
  [ "$MODE" = processes ] && say "The demo's processes stop now (PALISADE_DEMO_KUBECONFIG was set)."
elif [ "$MODE" = pods ]; then
  cat <<EOF

Stop: ${B}make down${N} (the control plane, the node and the demo) or ${B}make demo-down${N} (deletes
namespace $NS and the chart's objects). make demo again starts the demo afresh.
EOF
else
  cat <<EOF

Stop: ${B}make down${N} (the control plane and the demo) or ${B}make demo-down${N} (only the demo's
processes). make demo again starts the demo afresh.
EOF
fi
say "${G}demo complete${N}"
