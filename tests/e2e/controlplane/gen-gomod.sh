#!/usr/bin/env bash
# Regenerates the pinned Go modules of the control-plane builder. Run only to bump a version:
#   K8S_VERSION=v1.36.3 ETCD_VERSION=v3.6.16 HELM_VERSION=v3.21.4 ./gen-gomod.sh
# The optional node's runtime (build.sh --node):
#   CONTAINERD_VERSION=v2.4.2 RUNC_VERSION=v1.5.2 CNI_PLUGINS_VERSION=v1.10.0
# k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them with replace
# directives that are ignored in a dependency; each is replaced by its published tag here.
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
K8S=${K8S_VERSION:-v1.36.3}; STG=v0.${K8S#v1.}
ETCD=${ETCD_VERSION:-v3.6.16}; HELM=${HELM_VERSION:-v3.21.4}
CTD=${CONTAINERD_VERSION:-v2.4.2}; RUNC=${RUNC_VERSION:-v1.5.2}; CNI=${CNI_PLUGINS_VERSION:-v1.10.0}

gomod=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S" |
  python3 -c 'import sys,json;print(json.load(sys.stdin)["GoMod"])')
mods=$(grep -E '^\s+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u)

mkdir -p k8s etcd helm containerd runc cni
{
  printf 'module palisade.dev/e2e/controlplane/k8s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S"
  for m in $mods; do printf '\t%s => %s %s\n' "$m" "$m" "$STG"; done
  printf ')\n'
} >k8s/go.mod
cat >k8s/tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes control-plane and node commands the e2e harness builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
printf 'module palisade.dev/e2e/controlplane/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD" >etcd/go.mod
cat >etcd/tools.go <<'GO'
//go:build tools

// Package tools pins the etcd server the e2e harness builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
GO
printf 'module palisade.dev/e2e/controlplane/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM" >helm/go.mod
cat >helm/tools.go <<'GO'
//go:build tools

// Package tools pins the helm CLI the e2e harness builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
printf 'module palisade.dev/e2e/controlplane/containerd\n\ngo 1.26.0\n\nrequire github.com/containerd/containerd/v2 %s\n' "$CTD" >containerd/go.mod
cat >containerd/tools.go <<'GO'
//go:build tools

// Package tools pins the container runtime the e2e node runs: containerd, its CLI and the runc shim.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
GO
printf 'module palisade.dev/e2e/controlplane/runc\n\ngo 1.26.0\n\nrequire github.com/opencontainers/runc %s\n' "$RUNC" >runc/go.mod
cat >runc/tools.go <<'GO'
//go:build tools

// Package tools pins the OCI runtime the e2e node's containerd starts containers with.
package tools

import _ "github.com/opencontainers/runc"
GO
printf 'module palisade.dev/e2e/controlplane/cni\n\ngo 1.26.0\n\nrequire github.com/containernetworking/plugins %s\n' "$CNI" >cni/go.mod
cat >cni/tools.go <<'GO'
//go:build tools

// Package tools pins the CNI plugins the e2e node's pod network uses.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
GO
for d in k8s etcd helm containerd runc cni; do (cd "$d" && go mod tidy); done
echo "pinned: kubernetes $K8S, etcd $ETCD, helm $HELM, containerd $CTD, runc $RUNC, CNI plugins $CNI"
