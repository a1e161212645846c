#!/usr/bin/env bash
# Builds the CNI forwarder (native/forward/forward.c), installed as
# /opt/cni/bin/tsflannel when the agent serves CNI calls: C linked statically
# against glibc (no NSS function is used, so the static link is complete), so
# the result is one small file that runs on any node, whatever its libc, and
# starts in well under a millisecond. Only when a source is newer than the
# output. CC picks another compiler (a cross gcc); the default builds for this
# machine's architecture (the image's build stage runs on the target's).
set -euo pipefail
cd "$(dirname "$0")/.."
src=native/forward
out=native/build/tsflannel-forward
mkdir -p "$(dirname "$out")"
# The compiler is part of what was built: a cross build after a native one must not be taken as current.
stamp="$out.cc"
cc="${CC:-gcc}"
if [ -e "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$cc" ] &&
  [ -z "$(find "$src" scripts/build-forward.sh -newer "$out" -print -quit)" ]; then
  exit 0
fi
# -s strips at link time: the host's strip cannot read a cross compiler's output.
"$cc" -std=gnu11 -O2 -static -s -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
  -o "$out.tmp" "$src"/*.c
mv "$out.tmp" "$out"
echo "$cc" > "$stamp"
echo "built $out"
