#!/usr/bin/env bash
# Builds the test driver test/cnitool (a cnitool equivalent) against Debian's
# libcni: Debian's CNI -dev package ships libcni but not cnitool.
set -euo pipefail
exec bash "$(dirname "$0")/go-build.sh" test/cnitool native/build/tsf-cnitool
