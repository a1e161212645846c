#!/usr/bin/env bash
# Builds the netlink shim (native/tsfnl) as a C-shared library against
# Debian's Go packages, in GOPATH mode: there is no Go module proxy here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=native/build/libtsfnl.so
mkdir -p native/build
# Rebuild only when a Go source is newer than the library.
if [ -f "$out" ] && [ -z "$(find native/tsfnl -name '*.go' -newer "$out" -print -quit)" ]; then
  exit 0
fi
export GO111MODULE=off
export GOPATH="$PWD/native/build/gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$PWD/native/build/gocache}"
export GOFLAGS=
# GOPATH mode wants the package under GOPATH/src; a symlink keeps one copy.
mkdir -p native/build/gopath/src/tsflannel
ln -sfn "$PWD/native/tsfnl" native/build/gopath/src/tsflannel/tsfnl
(cd native/build/gopath/src/tsflannel/tsfnl && \
  go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o "$OLDPWD/$out.tmp" .)
rm -f "$out.tmp.h" native/build/libtsfnl.so.h
mv "$out.tmp" "$out"
echo "built $out"
