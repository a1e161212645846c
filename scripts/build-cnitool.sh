#!/usr/bin/env bash
# Builds the test driver test/cnitool (a cnitool equivalent) against Debian's
# libcni, in GOPATH mode like build-native.sh: Debian's CNI -dev package ships
# libcni but not cnitool, and there is no Go module proxy here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=native/build/tsf-cnitool
src=test/cnitool
mkdir -p native/build
# Rebuild only when a Go source is newer than the binary.
if [ -x "$out" ] && [ -z "$(find "$src" -name '*.go' -newer "$out" -print -quit)" ]; then
  exit 0
fi
export GO111MODULE=off
export GOPATH="$PWD/native/build/gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$PWD/native/build/gocache}"
export GOFLAGS=
# GOPATH mode wants the package under GOPATH/src; a symlink keeps one copy.
mkdir -p native/build/gopath/src/tsflannel
ln -sfn "$PWD/$src" native/build/gopath/src/tsflannel/cnitool
(cd native/build/gopath/src/tsflannel/cnitool && \
  go build -trimpath -ldflags='-s -w' -o "$OLDPWD/$out.tmp" .)
mv "$out.tmp" "$out"
echo "built $out"
