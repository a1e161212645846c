# tsflannel image: tsflanneld (the entrypoint; it also serves the node's CNI
# calls on /run/tsflannel/cni.sock), tsflannel (the standalone CNI plugin and
# node tool) and tsflannel-forward (the static forwarder). The DaemonSet's
# init container runs `tsflannel install`, which puts the forwarder on the
# node as /opt/cni/bin/tsflannel and the standalone beside it as
# tsflannel-standalone. tsflannel is one Node single executable built by
# scripts/package.sh (so the runtime image needs no Node); tsflanneld is a
# link to it, and the name it is started under picks the program.
#
#   docker build -t tsflannel:0.1.0 .
#   npm run image     (buildah, with local bases when the public ones cannot
#                      be pulled: scripts/image.sh)
#
# Plain Dockerfile syntax (no BuildKit features), so buildah bud builds it too.
# The bases are build arguments so a builder without registry access can
# supply its own Debian bookworm images.
ARG BUILD_BASE=node:20-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim

# ---- build: the same steps as scripts/setup.sh, then scripts/package.sh ----
FROM ${BUILD_BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
# Go and the netlink sources come from Debian (GOPATH mode, no module proxy);
# containernetworking-plugins only to take its portmap binary.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      golang-go golang-github-vishvananda-netlink-dev golang-github-vishvananda-netns-dev \
      gcc libc6-dev binutils containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json ./
COPY scripts/ scripts/
COPY native/tsfnl/ native/tsfnl/
COPY native/forward/ native/forward/
RUN bash scripts/build-native.sh && bash scripts/build-forward.sh
COPY src/ src/
COPY conf/ conf/
RUN npx --no-install tsc -p tsconfig.json --noEmit \
 && bash scripts/package.sh --force \
 && ./dist/tsflannel --help >/dev/null \
 && ./dist/tsflanneld --help >/dev/null \
 && test -x ./dist/tsflannel-forward \
 && echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION ./dist/tsflannel | grep -q supportedVersions

# ---- runtime ----
FROM ${RUNTIME_BASE}
ENV DEBIAN_FRONTEND=noninteractive
# nftables gives nft for EnableNFTables; iptables ships both backends
# (iptables-nft, iptables-legacy) behind update-alternatives; iproute2 is for
# people debugging inside the pod; `tsflannel doctor` run in the pod pings
# remote VTEPs with iputils-ping; wireguard-tools and wireguard-go serve the
# wireguard backend.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables iproute2 iputils-ping ca-certificates wireguard-tools wireguard-go \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log

# The agent's rules must land in the backend the node already uses, or they
# sit beside kube-proxy's in the other one. On its first call this wrapper
# picks the backend kubelet's hint chains (KUBE-IPTABLES-HINT,
# KUBE-KUBELET-CANARY in mangle) name, else the one holding more rules (nft
# on a tie, Debian's default), makes it the alternative, and runs the
# command; later calls skip it. Calls take turns under a flock:
# update-alternatives fails when two run at once.
# (chmod in RUN: COPY --chmod needs BuildKit, and a checkout may lose the bit)
COPY conf/image/iptables-wrapper /usr/sbin/iptables-wrapper
RUN chmod 0755 /usr/sbin/iptables-wrapper \
 && for t in iptables ip6tables; do \
      update-alternatives --install "/usr/sbin/$t" "$t" /usr/sbin/iptables-wrapper 100 \
        --slave "/usr/sbin/$t-restore" "$t-restore" /usr/sbin/iptables-wrapper \
        --slave "/usr/sbin/$t-save" "$t-save" /usr/sbin/iptables-wrapper; \
    done

# portmap: the second plugin of the conflist; `tsflannel install --with-plugin`
# puts it on nodes that have none, and replaces a node's own that cannot speak
# the conflist's cniVersion when this one can (else it keeps the node's and warns).
COPY --from=build /usr/lib/cni/portmap /usr/lib/cni/portmap
COPY --from=build /src/dist/tsflannel /src/dist/tsflannel-forward /usr/local/bin/
RUN ln -s tsflannel /usr/local/bin/tsflanneld
COPY --from=build /src/conf/10-tsflannel.conflist /usr/share/tsflannel/10-tsflannel.conflist

ENTRYPOINT ["/usr/local/bin/tsflanneld"]
