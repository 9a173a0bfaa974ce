#!/usr/bin/env bash
# Makes sure a cargo subcommand is installed at a pinned version: returns at once when it is
# (one `cargo TOOL --version`), otherwise installs it from crates.io with its own lock file.
#
#   scripts/cargo-tool.sh cargo-deny 0.20.2     (`make lint`)
#   scripts/cargo-tool.sh cargo-fuzz 0.13.2     (`make fuzz`)
#
# The install builds in a temporary directory (not the workspace's CARGO_TARGET_DIR) into
# $CARGO_HOME/bin. A cold cargo-deny install takes about 6 minutes on 2 cores.
set -euo pipefail
tool=${1:?usage: cargo-tool.sh TOOL VERSION}
version=${2:?usage: cargo-tool.sh TOOL VERSION}
cargo=${CARGO:-cargo}

if [ "$("$cargo" "${tool#cargo-}" --version 2>/dev/null)" = "$tool $version" ]; then
  exit 0
fi
echo "installing $tool $version from crates.io (once)" >&2
env -u CARGO_TARGET_DIR "$cargo" install "$tool" --version "$version" --locked
