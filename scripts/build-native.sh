#!/usr/bin/env bash
# Builds the netlink shim (native/tsfnl) as a C-shared library against
# Debian's vishvananda/netlink sources.
set -euo pipefail
exec bash "$(dirname "$0")/go-build.sh" native/tsfnl native/build/libtsfnl.so -buildmode=c-shared
