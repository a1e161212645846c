#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine, run as root: system
# packages, npm dependencies, the netlink shim and the TypeScript build. Each
# step is skipped when it is already done, so `npm test` and `npm run demo`
# can call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

# Everything the project runs or tests against, from Debian's packages.
# Tools the tests spawn: ip and bridge (iproute2), iptables/iptables-save,
# flock, nsenter and unshare (util-linux), umount (mount), sysctl (procps),
# ping, strace (the lease-atomicity test kills the plugin at syscalls), chattr
# (e2fsprogs: the fuzz suite's unwritable-for-root files), etcd and etcdctl,
# the container runtimes and busybox; iperf3 and ethtool for the data-path
# benchmark (bench/datapath.js); gcc and libc6-dev build the static C forwarder
# (scripts/build-forward.sh). Under CI=true a system
# test whose tool is missing fails instead of skipping (test/helpers/require.ts).
DEB_PACKAGES=(
  golang-go golang-github-vishvananda-netlink-dev golang-github-vishvananda-netns-dev
  golang-github-appc-cni-dev
  iproute2 iptables nftables util-linux mount procps iputils-ping kmod strace e2fsprogs openssl
  etcd-server etcd-client
  containernetworking-plugins
  binutils gcc libc6-dev
  file strace
  containerd runc podman buildah conmon busybox-static
  wireguard-tools wireguard-go iperf3 tcpdump ethtool
  mmdebstrap
)

missing_packages() {
  local p
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  local missing
  missing=$(missing_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages (run as root to install): $missing"
    exit 1
  fi
  say "installing Debian packages: $(echo $missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_npm() {
  # npm ci only when the lock file changed since the last install.
  if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    return 0
  fi
  say "installing npm dependencies"
  # The committed lock lists every platform's optional packages (rollup's),
  # so `npm ci` installs it as it is and never rewrites it.
  npm ci --no-audit --no-fund --loglevel=error
}

build_ts() {
  local stamp=build/.stamp
  if [ -f "$stamp" ] && [ -z "$(find src tsconfig.json package-lock.json -newer "$stamp" -print -quit)" ]; then
    return 0
  fi
  say "compiling TypeScript"
  # Compile beside the old tree and swap it in, so stale outputs of deleted
  # sources disappear and a running plugin never sees a half-empty build/.
  rm -rf build.new build.old
  npx --no-install tsc -p tsconfig.json --outDir build.new
  touch build.new/.stamp
  [ -d build ] && mv build build.old
  mv build.new build
  rm -rf build.old
}

install_packages
install_npm
bash scripts/build-native.sh
bash scripts/build-forward.sh
bash scripts/build-cnitool.sh
build_ts
# The single executables dist/tsflannel and dist/tsflanneld (strip comes from
# binutils); package.sh returns at once when no input changed.
bash scripts/package.sh
