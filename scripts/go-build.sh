#!/usr/bin/env bash
# go-build.sh SRC_DIR OUT [go build flags...]
# Builds a Go package against Debian's Go sources in GOPATH mode (there is no
# Go module proxy here), only when a .go file in SRC_DIR is newer than OUT or
# the set of .go files changed (a deleted file leaves nothing newer).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$1 out=$2
shift 2
mkdir -p "$(dirname "$out")"
sources=$(find "$src" -name '*.go' -printf '%P\n' | LC_ALL=C sort)
if [ -e "$out" ] && [ "$(cat "$out.sources" 2>/dev/null)" = "$sources" ] &&
  [ -z "$(find "$src" -name '*.go' -newer "$out" -print -quit)" ]; then
  exit 0
fi
export GO111MODULE=off
export GOPATH="$PWD/native/build/gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$PWD/native/build/gocache}"
export GOFLAGS=
# GOPATH mode wants the package under GOPATH/src; a symlink keeps one copy.
link="native/build/gopath/src/tsflannel/$(basename "$src")"
mkdir -p "$(dirname "$link")"
ln -sfn "$PWD/$src" "$link"
(cd "$link" && go build -trimpath -ldflags='-s -w' "$@" -o "$OLDPWD/$out.tmp" .)
rm -f "$out.tmp.h" "$out.h"
mv "$out.tmp" "$out"
printf '%s\n' "$sources" >"$out.sources"
echo "built $out"
