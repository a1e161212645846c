#!/usr/bin/env bash
# Builds the tsflannel image from the repository's Dockerfile with buildah
# (no Docker engine needed), then checks it and prints its size.
#
#   npm run image                       # tags localhost/tsflannel:0.1.0
#   bash scripts/image.sh --tag T       # also tags T
#   bash scripts/image.sh --print-inputs-tag
#
# The Dockerfile's bases are build arguments. When the public images
# (node:20-bookworm, debian:bookworm-slim) are in local storage they are used;
# otherwise, as on a machine that cannot reach a registry, local ones are made
# from Debian's own packages and kept in podman's storage for the next run:
#   localhost/tsflannel-base:bookworm-<recipe>          mmdebstrap minbase + ca-certificates
#   localhost/tsflannel-build-base:bookworm-node-<ver>-<recipe>  that + this machine's node and npm
#
# Every build runs with --network host --isolation chroot: no bridge, no
# firewall rule and no network namespace is created by the build.
#
# Environment: TSFLANNEL_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[image] %s\n' "$*" >&2; }

IMAGE=localhost/tsflannel:0.1.0
PUBLIC_BUILD_BASE=docker.io/library/node:20-bookworm
PUBLIC_RUNTIME_BASE=docker.io/library/debian:bookworm-slim
MIRROR=${TSFLANNEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

extra_tag=
print_inputs_tag=0
while [ $# -gt 0 ]; do
  case $1 in
    --tag) extra_tag=$2; shift 2 ;;
    --print-inputs-tag) print_inputs_tag=1; shift ;;
    *) say "unknown argument: $1"; exit 2 ;;
  esac
done

node_bin=$(readlink -f "$(command -v node)")
node_version=$("$node_bin" --version)
# npm's package dir, wherever the npm on PATH lives (…/node_modules/npm).
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)

# A tag naming exactly what the image is built from: every tracked file the
# build context can see (tests and docs excluded), the working tree's
# content (not the index), and the node that the local build base carries.
inputs_tag() {
  local sum
  sum=$({ echo "$node_version"
          git ls-files -z -- . ':!:test' ':!:docs' ':!:bench' ':!:*.md' \
            | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
  echo "localhost/tsflannel:inputs-$sum"
}
if [ "$print_inputs_tag" = 1 ]; then inputs_tag; exit 0; fi

# podman and buildah as the test suite runs them: cgroupfs (no systemd here),
# and a nofile limit that root without CAP_SYS_RESOURCE may set.
conf=$(mktemp -d /tmp/tsflannel-image.XXXXXX)
cleanup() { rm -rf "$conf"; }
trap cleanup EXIT
cat >"$conf/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
export CONTAINERS_CONF=$conf/containers.conf

runtime_base() {
  if podman image exists "$PUBLIC_RUNTIME_BASE"; then echo "$PUBLIC_RUNTIME_BASE"; return; fi
  if ! podman image exists "$LOCAL_RUNTIME_BASE"; then
    command -v mmdebstrap >/dev/null || { say "mmdebstrap is missing (scripts/setup.sh installs it)"; exit 1; }
    say "making $LOCAL_RUNTIME_BASE with mmdebstrap (minbase bookworm)"
    # Like debian:bookworm-slim: no man pages, docs or translations, and apt
    # drops the packages it downloaded once they are installed. The
    # merged-usr hook makes /bin -> usr/bin itself; otherwise the usrmerge
    # package would pull in perl (50 MB) for that.
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --aptopt='Acquire::Retries "3"' \
      --aptopt='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }' \
      --aptopt='Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache ""' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$conf/rootfs.tar" \
      "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
      "deb ${MIRROR%/debian}/debian-security bookworm-security main" >&2
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      "$conf/rootfs.tar" "$LOCAL_RUNTIME_BASE" >/dev/null
    rm -f "$conf/rootfs.tar"
  fi
  echo "$LOCAL_RUNTIME_BASE"
}

# The build stage needs Node >= 20.12 and npm; Debian bookworm's nodejs is 18,
# so the local build base carries the node and npm that run this script. It
# also trusts the CAs this machine added (/usr/local/share/ca-certificates),
# so `npm ci` in the build works behind the same TLS-inspecting proxy as the
# host; the runtime image gets none of them.
build_base() {
  local base=$1 ctr
  if podman image exists "$PUBLIC_BUILD_BASE"; then echo "$PUBLIC_BUILD_BASE"; return; fi
  if ! podman image exists "$LOCAL_BUILD_BASE"; then
    say "making $LOCAL_BUILD_BASE ($base + node $node_version from $node_bin, npm from $npm_dir)"
    ctr=$(buildah from --quiet --pull-never "$base")
    buildah copy --quiet "$ctr" "$node_bin" /usr/local/bin/node >/dev/null
    buildah copy --quiet "$ctr" "$npm_dir" /usr/local/lib/node_modules/npm >/dev/null
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
      buildah copy --quiet "$ctr" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
    fi
    buildah run --network host --isolation chroot "$ctr" -- sh -c '
      update-ca-certificates >/dev/null
      ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
      ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
      node --version >/dev/null && npm --version >/dev/null'
    buildah config --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt "$ctr"
    buildah commit --quiet --rm "$ctr" "$LOCAL_BUILD_BASE" >/dev/null
  fi
  echo "$LOCAL_BUILD_BASE"
}

# The local bases' tags name their recipe (the functions above), so a change
# to how they are made makes new ones instead of reusing stale ones.
recipe() { declare -f "$@" | sha256sum | cut -c1-12; }
LOCAL_RUNTIME_BASE=localhost/tsflannel-base:bookworm-$(recipe runtime_base)
LOCAL_BUILD_BASE=localhost/tsflannel-build-base:bookworm-node-${node_version#v}-$(recipe runtime_base build_base)
rbase=$(runtime_base)
bbase=$(build_base "$rbase")
tag=$(inputs_tag)
if podman image exists "$tag"; then
  say "up to date: $tag"
else
  say "building $IMAGE from the Dockerfile (build base $bbase, runtime base $rbase)"
  start=$SECONDS
  buildah bud --network host --isolation chroot --layers --pull-never \
    --build-arg "BUILD_BASE=$bbase" --build-arg "RUNTIME_BASE=$rbase" \
    --tag "$tag" . >&2
  say "built in $((SECONDS - start)) s"
fi
podman tag "$tag" "$IMAGE"
# Earlier builds' tags go, so their images can be pruned (`podman image
# prune` frees what no tag or layer cache still uses).
podman images --format '{{.Repository}}:{{.Tag}}' 'localhost/tsflannel' \
  | grep ':inputs-' | grep -vxF "$tag" | while read -r old; do podman untag "$old" "$old"; done || true
[ -n "$extra_tag" ] && podman tag "$tag" "$extra_tag"

# ---- checks: both executables run, and the init container's install works ----
run_image() { podman run --rm --network none --cgroup-manager cgroupfs "$@"; }
run_image --entrypoint /usr/local/bin/tsflanneld "$IMAGE" --help >/dev/null
run_image --entrypoint /usr/local/bin/tsflannel "$IMAGE" --help >/dev/null
out=$conf/install
mkdir -p "$out/bin" "$out/net.d"
run_image -v "$out:/host" --entrypoint /usr/local/bin/tsflannel "$IMAGE" \
  install --cni-bin-dir /host/bin --cni-conf-dir /host/net.d \
  --conflist /usr/share/tsflannel/10-tsflannel.conflist --with-plugin /usr/lib/cni/portmap >&2
for f in bin/tsflannel bin/portmap net.d/10-tsflannel.conflist; do
  [ -s "$out/$f" ] || { say "tsflannel install did not write $f"; exit 1; }
done
echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$out/bin/tsflannel" | grep -q supportedVersions

# ---- size, and what takes it ----
bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "$IMAGE ($tag): $((bytes / 1000000)) MB"
mnt=$(podman image mount "$IMAGE")
{
  ( cd "$mnt" && du -b usr/local/bin/tsflannel usr/local/bin/tsflannel-forward usr/lib/cni/portmap ) \
    | awk '{ printf "%5.1f MB  /%s\n", $1 / 1e6, $2 }'
  # The rest is Debian: the base and the packages the Dockerfile adds (the
  # package sizes are dpkg's declared ones; docs and man pages are excluded
  # on disk).
  all=$(du -sb "$mnt" | cut -f1)
  ours=$(cd "$mnt" && du -cb usr/local/bin/tsflannel usr/local/bin/tsflannel-forward usr/lib/cni/portmap | tail -1 | cut -f1)
  dpkg-query --admindir="$mnt/var/lib/dpkg" -W -f '${Installed-Size} ${Package}\n' \
    | sort -rn | awk -v bytes=$((all - ours)) 'NR <= 8 { top = top sprintf(" %s %.1f", $2, $1 * 1024 / 1e6) }
        END { printf "%5.1f MB  Debian: %d packages; the largest (MB):%s\n", bytes / 1e6, NR, top }'
} | sed 's/^/[image]   /' >&2
podman image unmount "$IMAGE" >/dev/null
