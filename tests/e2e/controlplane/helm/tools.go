//go:build tools

// Package tools pins the helm CLI the e2e harness builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
