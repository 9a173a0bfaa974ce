#!/usr/bin/env bash
# Builds the real control plane the e2e tests and `make up` run: etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm, from the Go modules pinned beside this script,
# into $PALISADE_CACHE/bin/<kubernetes-version>/ (default ~/.cache/palisade). Idempotent:
# a second run with the same pins does nothing. Prints the binary directory on stdout
# (everything else goes to stderr), so callers can do BIN=$(build.sh).
#
# `build.sh --node` also builds the optional one-node cluster (docs/node.md) into the same
# directory: kube-scheduler, kubelet, kube-proxy, containerd (+ ctr, the runc shim), runc,
# the CNI plugins (cni/bridge, cni/host-local, cni/loopback, cni/portmap) and a static
# pause program. runc needs cgo and libseccomp (Debian: gcc libseccomp-dev pkg-config).
set -euo pipefail
node=0
[ "${1:-}" = --node ] && node=1
here=$(cd "$(dirname "$0")" && pwd)
say() { printf '[controlplane] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v go >/dev/null ||
  die "go is not installed. Install Go >= 1.26 (https://go.dev/dl/ or your package manager) and re-run."
gov=$(go env GOVERSION | sed 's/^go//')
need=1.26
[ "$(printf '%s\n%s\n' "$need" "$gov" | sort -V | head -n1)" = "$need" ] ||
  die "go $gov is too old: the pinned Kubernetes needs Go >= $need. Install a newer Go and re-run."

K8S=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$here/k8s/go.mod")
ETCD=$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" { print $3 }' "$here/etcd/go.mod")
HELM=$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3 }' "$here/helm/go.mod")
[ -n "$K8S" ] && [ -n "$ETCD" ] && [ -n "$HELM" ] || die "cannot read the pinned versions from $here/*/go.mod"

CACHE=${PALISADE_CACHE:-$HOME/.cache/palisade}
BIN="$CACHE/bin/$K8S"
stamp="$BIN/.pins"
pins=$(cat "$here"/{k8s,etcd,helm}/go.{mod,sum} "$here/build.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    [ -x "$BIN/$b" ] || { rm -f "$stamp"; break; }
  done
fi
cp_ok=0
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ] && cp_ok=1
if [ $cp_ok = 1 ] && [ $node = 0 ]; then
  say "up to date: kubernetes $K8S, etcd $ETCD, helm $HELM in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
if [ $node = 1 ]; then
  # The node is optional: its binaries have their own stamp, so building them never
  # rebuilds the control plane and the control plane never waits for them.
  nstamp="$BIN/.pins-node"
  npins=$(cat "$here"/{k8s,containerd,runc,cni}/go.{mod,sum} "$here/../node/pause.c" \
    "$here/build.sh" | sha256sum | cut -d' ' -f1)
  if [ -f "$nstamp" ] && [ "$(cat "$nstamp")" = "$npins" ]; then
    for b in kube-scheduler kubelet kube-proxy containerd ctr containerd-shim-runc-v2 runc \
      cni/bridge cni/host-local cni/loopback cni/portmap pause; do
      [ -x "$BIN/$b" ] || { rm -f "$nstamp"; break; }
    done
  fi
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# Go's module and build caches live in the user's cache (outside the checkout) and persist.
minor=${K8S#v1.}; minor=${minor%%.*}
build() {
  local what=$1 dir=$2; shift 2
  local t0=$SECONDS
  say "building $what (first build takes several minutes; later ones reuse the Go build cache)"
  (cd "$here/$dir" && go build -trimpath "$@") || die "building $what failed (see the go output above)"
  say "built $what in $((SECONDS - t0))s"
}

ldf="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf+=" -X $p.gitVersion=$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
build_node() {
  command -v gcc >/dev/null || die "gcc is needed for runc (cgo) and the pause program: apt-get install gcc"
  pkg-config --exists libseccomp 2>/dev/null ||
    die "libseccomp is needed for runc's seccomp support: apt-get install libseccomp-dev pkg-config"
  local t0=$SECONDS
  build "kube-scheduler $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
  build "kubelet $K8S" k8s -ldflags "$ldf" -o "$BIN/kubelet" k8s.io/kubernetes/cmd/kubelet
  build "kube-proxy $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
  local ctd c=github.com/containerd/containerd/v2
  ctd=$(awk -v m=$c '$1 == "require" && $2 == m { print $3 }' "$here/containerd/go.mod")
  build "containerd $ctd" containerd -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $c/version.Version=$ctd" -o "$BIN/" \
    $c/cmd/containerd $c/cmd/ctr $c/cmd/containerd-shim-runc-v2
  local rv
  rv=$(awk '$1 == "require" && $2 == "github.com/opencontainers/runc" { print $3 }' "$here/runc/go.mod")
  CGO_ENABLED=1 build "runc $rv" runc -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=${rv#v}" -o "$BIN/runc" github.com/opencontainers/runc
  local p=github.com/containernetworking/plugins/plugins
  mkdir -p "$BIN/cni"
  build "CNI plugins" cni -ldflags "-s -w" -o "$BIN/cni/" \
    $p/main/bridge $p/ipam/host-local $p/main/loopback $p/meta/portmap
  gcc -static -Os -o "$BIN/pause" "$here/../node/pause.c" || die "building the pause program failed"
  echo "$npins" >"$nstamp"
  say "node binaries ready in $BIN ($((SECONDS - t0))s)"
}

t_all=$SECONDS
if [ $cp_ok = 1 ]; then
  [ $node = 1 ] && [ "$(cat "$nstamp" 2>/dev/null)" != "$npins" ] && build_node
  say "up to date: kubernetes $K8S, etcd $ETCD, helm $HELM in $BIN"
  echo "$BIN"
  exit 0
fi
build "etcd $ETCD" etcd -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
build "kube-apiserver $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
build "kube-controller-manager $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-controller-manager" \
  k8s.io/kubernetes/cmd/kube-controller-manager
build "kubectl $K8S" k8s -ldflags "$ldf" -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl
hv=helm.sh/helm/v3/internal/version
build "helm $HELM" helm -ldflags "-s -w -X $hv.version=$HELM -X $hv.gitTreeState=clean" \
  -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
echo "$pins" >"$stamp"
[ $node = 1 ] && [ "$(cat "$nstamp" 2>/dev/null)" != "$npins" ] && build_node
say "control plane ready in $BIN ($((SECONDS - t_all))s)"
echo "$BIN"
