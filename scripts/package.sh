#!/usr/bin/env bash
# Builds dist/tsflannel as a Node single executable application (SEA): one
# ELF holding node itself, esbuild bundles of every program with V8's code
# cache for each, and koffi's addon plus the netlink shim as embedded files
# that src/sea/assets.ts extracts at run time. The plugin bundle's cache is
# written after running the plugin in a throw-away network namespace
# (scripts/train-code-cache.mjs; needs root or user namespaces, else the
# cache holds only what compiling alone gives, and the build says so). It
# needs only glibc, libstdc++ and libgcc_s on the host: no Node, no
# node_modules. One executable serves the node tool, the
# standalone CNI plugin and the agent (src/main/tsflannel.ts picks by argv[0]
# or a first argument), because each copy of node weighs about 85 MB:
# dist/tsflanneld is a hard link to it. It also embeds the bundle of the
# agent's CNI worker thread (src/daemon/cni-pool.ts runs it with eval).
# dist/tsflannel-forward is a copy of the static forwarder
# (scripts/build-forward.sh), so dist/ holds every binary.
#
#   bash scripts/package.sh            rebuild only when an input changed
#   bash scripts/package.sh --force    rebuild
#
# Environment:
#   TSFLANNEL_NODE_BIN        node binary to embed into (default: `command -v node`)
#   TSFLANNEL_SEA_CODE_CACHE  1 = embed V8's code cache (default), 0 = not
#   TSFLANNEL_SEA_TRAIN       1 = train the plugin's cache (default), 0 = compile-only cache
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[package] %s\n' "$*" >&2; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  '') ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

node_bin=$(command -v "${TSFLANNEL_NODE_BIN:-node}" || true)
if [ -z "$node_bin" ] || [ ! -x "$node_bin" ]; then
  echo "package: no node binary at ${TSFLANNEL_NODE_BIN:-node} (set TSFLANNEL_NODE_BIN)" >&2
  exit 1
fi
node_bin=$(readlink -f "$node_bin")
code_cache=${TSFLANNEL_SEA_CODE_CACHE:-1}
train=${TSFLANNEL_SEA_TRAIN:-1}
shim=native/build/libtsfnl.so
forwarder=native/build/tsflannel-forward
dist=dist
work=dist/.work
stamp=dist/.stamp
# The SEA blob format belongs to one node build, so the node binary is an
# input too; apt keeps package mtimes, hence its version and size.
stamp_id="node=$node_bin $("$node_bin" --version) $(stat -c %s "$node_bin") code_cache=$code_cache train=$train"

# One build at a time (setup.sh and a test may both ask for one).
mkdir -p "$dist"
exec 9>"$dist/.lock"
flock 9

up_to_date() {
  [ -x "$dist/tsflannel" ] && [ -x "$dist/tsflanneld" ] && [ -x "$dist/tsflannel-forward" ] && [ -f "$stamp" ] || return 1
  [ "$dist/tsflannel" -ef "$dist/tsflanneld" ] || return 1
  [ "$(cat "$stamp")" = "$stamp_id" ] || return 1
  [ -z "$(find src conf/10-tsflannel.conflist package-lock.json scripts/package.sh scripts/train-code-cache.mjs "$shim" "$forwarder" -newer "$stamp" -print -quit)" ]
}

if [ "$force" -eq 0 ] && [ -f "$shim" ] && [ -f "$forwarder" ] && up_to_date; then
  exit 0
fi

[ -f "$shim" ] || bash scripts/build-native.sh
[ -f "$forwarder" ] || bash scripts/build-forward.sh
rm -f "$stamp"
rm -rf "$work"
rm -rf "$dist/bundle"
mkdir -p "$dist/bundle" "$work/assets"

# 1. Bundles and the asset manifest. esbuild does not type-check; `npm run
#    typecheck` does. What the bundles need that plain esbuild would break:
#    - import.meta.url (the sources are ESM, the bundles CommonJS, which SEA
#      requires) becomes the bundle's own file URL;
#    - koffi stays out: in a SEA its addon is loaded from the extracted copy;
#    - etcd3 reads its .proto files from disk next to its own sources at load
#      time, so they are compiled to JSON here and inlined.
say "bundling with esbuild"
node --input-type=module - "$work" "$dist/bundle" "$shim" <<'EOF'
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const [work, bundles, shim] = process.argv.slice(2);
const require = createRequire(resolve('package.json'));

function koffiAddon() {
  const koffiDir = dirname(require.resolve('koffi'));
  const triplet = `${process.platform}_${process.arch}`;
  const candidates = [join(koffiDir, 'build', 'koffi', triplet, 'koffi.node')];
  try {
    const pkg = dirname(require.resolve(`@koromix/koffi-${process.platform}-${process.arch}/package.json`));
    candidates.push(join(pkg, triplet, 'koffi.node'));
  } catch {
    // no prebuilt package: only a source build can provide the addon
  }
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`koffi.node not found; looked at ${candidates.join(', ')}`);
  return found;
}

// etcd3/lib/connection-pool.js does loadSync(`${__dirname}/../proto/rpc.proto`, {...}).
const etcdProtoPlugin = {
  name: 'etcd3-inline-proto',
  setup(b) {
    b.onLoad({ filter: /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, (args) => {
      const src = readFileSync(args.path, 'utf8');
      const call = /\(0, proto_loader_1\.loadSync\)\(`\$\{__dirname\}\/\.\.\/proto\/rpc\.proto`, (\{[^}]*\})\)/;
      const m = call.exec(src);
      if (!m) throw new Error(`${args.path}: the proto loading call changed; update scripts/package.sh`);
      const etcdRequire = createRequire(args.path);
      const protobuf = createRequire(etcdRequire.resolve('@grpc/proto-loader'))('protobufjs');
      const root = new protobuf.Root();
      // keepCase is a parse-time option, so it must be applied here.
      root.loadSync(join(dirname(args.path), '..', 'proto', 'rpc.proto'), { keepCase: /keepCase:\s*true/.test(m[1]) });
      root.resolveAll();
      const inlined = `(0, proto_loader_1.fromJSON)(${JSON.stringify(root.toJSON())}, ${m[1]})`;
      return { contents: src.replace(call, () => inlined), loader: 'js' };
    });
  },
};

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['koffi'],
  define: { 'import.meta.url': '__tsf_import_meta_url' },
  banner: { js: 'var __tsf_import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [etcdProtoPlugin],
  legalComments: 'none',
  logLevel: 'warning',
};
// The SEA's main script (src/sea/main.ts) only runs the dispatcher and CNI
// plugin bundle (src/sea/embedded.ts MAIN_BUNDLE); the node tool and the
// agent are one bundle of their own (src/sea/programs.ts PROGRAMS_BUNDLE).
// Both are embedded as assets with V8's code cache.
await build({ ...common, entryPoints: ['src/sea/main.ts'], outfile: join(bundles, 'tsflannel-sea.cjs') });
await build({ ...common, entryPoints: ['src/main/tsflannel.ts'], outfile: join(bundles, 'tsflannel.cjs') });
await build({ ...common, entryPoints: ['src/main/programs.ts'], outfile: join(bundles, 'tsflannel-programs.cjs') });
await build({ ...common, entryPoints: ['src/daemon/cni-worker.ts'], outfile: join(bundles, 'cni-worker.cjs') });

// Native files: extracted at run time into a directory named by their hashes
// (src/sea/assets.ts MANIFEST_ASSET; names as in src/netlink/ffi.ts).
const natives = { 'koffi.node': koffiAddon(), 'libtsfnl.so': shim };
const files = {};
for (const [name, path] of Object.entries(natives)) {
  const data = readFileSync(path);
  copyFileSync(path, join(work, 'assets', name));
  files[name] = { sha256: createHash('sha256').update(data).digest('hex'), size: data.length };
}
writeFileSync(join(work, 'assets', 'tsflannel-assets.json'), `${JSON.stringify({ files }, null, 2)}\n`);
EOF

# 2. V8's code caches, made by the node that the executable embeds (V8
#    accepts a cache only from its own build and flags), compiled exactly as
#    src/sea/embedded.ts compiles the bundles: for the tool and agent bundle
#    from compiling alone; for the plugin bundle after running the plugin
#    (scripts/train-code-cache.mjs), or from compiling alone when that fails.
say "code caches"
npx --no-install esbuild --bundle --platform=node --format=esm --log-level=warning src/sea/embedded.ts --outfile="$work/embedded.mjs"
"$node_bin" --input-type=module - "$dist/bundle" "$work/assets" "$work/embedded.mjs" <<'EOF'
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Script } from 'node:vm';
const [bundles, out, embedded] = process.argv.slice(2);
const { MAIN_BUNDLE, codeCacheAsset, wrapCommonJs } = await import(pathToFileURL(embedded).href);
for (const bundle of ['tsflannel-programs.cjs', MAIN_BUNDLE]) {
  const script = new Script(wrapCommonJs(readFileSync(join(bundles, bundle), 'utf8')), { filename: bundle });
  writeFileSync(join(out, codeCacheAsset(bundle)), script.createCachedData());
}
EOF
if [ "$code_cache" = 1 ] && [ "$train" = 1 ]; then
  say "training the plugin's code cache in a throw-away network namespace"
  trained="$work/assets/tsflannel.cjs.v8cache.trained"
  train_cmd=("$node_bin" scripts/train-code-cache.mjs "$work/embedded.mjs" "$dist/bundle/tsflannel.cjs" "$shim" "$trained")
  # As root a new network namespace is enough; otherwise a user namespace
  # maps us to root inside it, where the kernel allows it.
  unshare_args=(--net)
  [ "$(id -u)" = 0 ] || unshare_args=(--user --map-root-user --net)
  if unshare "${unshare_args[@]}" -- "${train_cmd[@]}"; then
    mv -f "$trained" "$work/assets/tsflannel.cjs.v8cache"
  else
    say "WARNING: could not train the plugin's code cache; the executable embeds the compile-only cache (each CNI call costs a few ms more); the next build tries again (TSFLANNEL_SEA_TRAIN=0 builds without training)"
    # A stamp that matches no build: the next run rebuilds and trains again.
    stamp_id="$stamp_id trained=no"
  fi
fi

# 3. The SEA blob. The conflist that `tsflannel install` writes
#    (src/cli/install.ts CONFLIST_ASSET) and the agent's CNI worker bundle
#    are embedded as they are, never extracted.
sea_config() {
  local name=$1
  cat >"$work/$name.sea.json" <<EOF
{
  "main": "$dist/bundle/$name-sea.cjs",
  "output": "$work/$name.blob",
  "disableExperimentalSEAWarning": true,
  "useSnapshot": false,
  "useCodeCache": $([ "$code_cache" = 1 ] && echo true || echo false),
  "assets": {
    "koffi.node": "$work/assets/koffi.node",
    "libtsfnl.so": "$work/assets/libtsfnl.so",
    "tsflannel-assets.json": "$work/assets/tsflannel-assets.json",
    "10-tsflannel.conflist": "conf/10-tsflannel.conflist",
    "cni-worker.cjs": "$dist/bundle/cni-worker.cjs",
    "tsflannel.cjs": "$dist/bundle/tsflannel.cjs",$([ "$code_cache" = 1 ] && printf '\n    "tsflannel.cjs.v8cache": "%s",' "$work/assets/tsflannel.cjs.v8cache")
    "tsflannel-programs.cjs": "$dist/bundle/tsflannel-programs.cjs",
    "tsflannel-programs.cjs.v8cache": "$work/assets/tsflannel-programs.cjs.v8cache"
  }
}
EOF
  "$node_bin" --experimental-sea-config "$work/$name.sea.json" >/dev/null
}

# 4. A copy of node (stripped when binutils is there: about 12 MB less) with
#    the blob injected and the SEA fuse flipped.
make_sea() {
  local name=$1 exe="$work/$1"
  if command -v strip >/dev/null; then
    strip -o "$exe" "$node_bin"
  else
    cp "$node_bin" "$exe"
  fi
  chmod u+w "$exe"
  # postject warns "Can't find string offset for section name '.note.100'"; harmless.
  npx --no-install postject "$exe" NODE_SEA_BLOB "$work/$name.blob" \
    --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >"$work/$name.postject.log" 2>&1 ||
    { cat "$work/$name.postject.log" >&2; exit 1; }
  chmod 755 "$exe"
  mv -f "$exe" "$dist/$name"
}

say "building SEA blobs (node $("$node_bin" --version), code cache: $code_cache)"
sea_config tsflannel
say "injecting into a copy of $node_bin"
make_sea tsflannel
# The agent's name for the same file (src/main/dispatch.ts).
ln -f "$dist/tsflannel" "$dist/.tsflanneld.tmp"
mv -f "$dist/.tsflanneld.tmp" "$dist/tsflanneld"
cp -f "$forwarder" "$dist/.tsflannel-forward.tmp"
chmod 755 "$dist/.tsflannel-forward.tmp"
mv -f "$dist/.tsflannel-forward.tmp" "$dist/tsflannel-forward"

# dist/bundle stays: bench/sea-startup.js compares `node <bundle>` to the
# SEA, and SEA stack traces name these files.
rm -rf "$work"
printf '%s\n' "$stamp_id" >"$stamp"
say "built $(du -h "$dist/tsflannel" | cut -f1) $dist/tsflannel (and $dist/tsflanneld, a hard link to it)"
