#!/usr/bin/env bash
# Builds the CNI forwarder (native/forward), installed as /opt/cni/bin/tsflannel
# when the agent serves CNI calls: standard library only and CGO_ENABLED=0, so
# the result is one static file that runs on any node, whatever its libc.
set -euo pipefail
export CGO_ENABLED=0
exec bash "$(dirname "$0")/go-build.sh" native/forward native/build/tsflannel-forward
