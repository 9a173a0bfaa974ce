//go:build tools

// Package tools pins the OCI runtime the e2e node's containerd starts containers with.
package tools

import _ "github.com/opencontainers/runc"
