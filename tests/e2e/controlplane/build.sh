#!/usr/bin/env bash
# Builds the real control plane the e2e tests and `make up` run: etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm, from the Go modules pinned beside this script,
# into $PALISADE_CACHE/bin/<kubernetes-version>/ (default ~/.cache/palisade). Idempotent:
# a second run with the same pins does nothing. Prints the binary directory on stdout
# (everything else goes to stderr), so callers can do BIN=$(build.sh).
set -euo pipefail
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
pins=$(cat "$here"/*/go.mod "$here"/*/go.sum "$here/build.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    [ -x "$BIN/$b" ] || { rm -f "$stamp"; break; }
  done
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
  say "up to date: kubernetes $K8S, etcd $ETCD, helm $HELM in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
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
t_all=$SECONDS
build "etcd $ETCD" etcd -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
build "kube-apiserver $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
build "kube-controller-manager $K8S" k8s -ldflags "$ldf" -o "$BIN/kube-controller-manager" \
  k8s.io/kubernetes/cmd/kube-controller-manager
build "kubectl $K8S" k8s -ldflags "$ldf" -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl
hv=helm.sh/helm/v3/internal/version
build "helm $HELM" helm -ldflags "-s -w -X $hv.version=$HELM -X $hv.gitTreeState=clean" \
  -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
echo "$pins" >"$stamp"
say "control plane ready in $BIN ($((SECONDS - t_all))s)"
echo "$BIN"
