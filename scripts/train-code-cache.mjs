// Writes V8's code cache for the plugin bundle (dist/bundle/tsflannel.cjs)
// after running the plugin on a throw-away node: VERSION, two ADDs (the
// first creates the bridge), CHECK and two DELs. A cache made by compiling
// alone holds only the top level of the bundle; V8 compiles every function
// when it is first called, and for a process that lives for one CNI call
// that compilation was a large share of its CPU. The cache written here holds
// every function those calls ran (scripts/package.sh embeds it in the single
// executable; src/sea/embedded.ts uses it).
//
//   unshare --net -- node scripts/train-code-cache.mjs <embedded.mjs> <bundle> <shim> <out>
//
// <embedded.mjs> is src/sea/embedded.ts built by esbuild (the one wrapper
// the executable compiles the bundle with), <shim> the netlink shim to load.
// It must run in a network namespace of its own, which it checks: the plugin
// creates its bridge and veths there, and the pods are namespaces of
// `unshare --net sleep` children, so nothing is left behind when it ends.
// The node running it must be the one the executable embeds: V8 rejects a
// cache from another build or with other flags. Exits non-zero when any
// step fails; package.sh then embeds the compile-only cache instead.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

function netnsOf(pid) {
  return readlinkSync(`/proc/${pid}/ns/net`);
}

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * In a child: compile the bundle with the cache so far, run it (it answers
 * the CNI call in its environment and exits), and write the cache at exit.
 */
async function child() {
  const { TRAIN_EMBEDDED: embedded, TRAIN_BUNDLE: bundle, TRAIN_CACHE_IN: cacheIn, TRAIN_CACHE_OUT: cacheOut } = process.env;
  const { runCommonJs } = await import(pathToFileURL(embedded).href);
  const cachedData = cacheIn && existsSync(cacheIn) ? readFileSync(cacheIn) : undefined;
  const { script } = runCommonJs(readFileSync(bundle, 'utf8'), bundle, cachedData, basename(bundle));
  if (cachedData && script.cachedDataRejected) {
    process.stderr.write('train-code-cache: V8 rejected the cache of the previous step\n');
    process.exit(3);
  }
  if (cacheOut) process.on('exit', () => writeFileSync(cacheOut, script.createCachedData()));
}

/** A pod: a sleeping process in a network namespace of its own. */
function startPod() {
  // Killed when training ends; the timeout only bounds a trainer killed first.
  const pod = spawn('unshare', ['--net', 'sleep', '120'], { stdio: 'ignore' });
  const mine = netnsOf(process.pid);
  for (let i = 0; i < 200; i++) {
    try {
      if (pod.exitCode !== null) break;
      if (netnsOf(pod.pid) !== mine) return { proc: pod, netns: `/proc/${pod.pid}/ns/net` };
    } catch {
      // not started yet
    }
    sleepMs(10);
  }
  pod.kill('SIGKILL');
  throw new Error('could not start a pod network namespace with unshare --net');
}

function parent([embedded, bundle, shim, out]) {
  if (!embedded || !bundle || !shim || !out) throw new Error('usage: train-code-cache.mjs <embedded.mjs> <bundle> <shim> <out>');
  // The plugin is about to create a bridge and veths: never in the caller's
  // namespace. (A caller's namespace we may not even read is not ours.)
  let callers;
  try {
    callers = netnsOf(process.ppid);
  } catch {
    callers = undefined;
  }
  if (callers !== undefined && netnsOf(process.pid) === callers) {
    throw new Error('not in a network namespace of its own (run it under unshare --net)');
  }
  const work = mkdtempSync(join(tmpdir(), 'tsf-train-'));
  const pods = [];
  try {
    pods.push(startPod(), startPod());
    const subnetFile = join(work, 'subnet.env');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    // logLevel error: a healthy call logs nothing, so pino (loaded only for a
    // message that passes the level) stays out of the cache, as out of the call.
    const conf = { cniVersion: '1.0.0', name: 'tsftrain', type: 'tsflannel', subnetFile, dataDir: join(work, 'networks'), logLevel: 'error' };
    const added = [];
    const cache = join(work, 'cache');
    const steps = [
      ['VERSION', -1],
      ['ADD', 0],
      ['ADD', 1],
      ['CHECK', 1],
      ['DEL', 1],
      ['DEL', 0],
    ];
    for (const [command, p] of steps) {
      const pod = p >= 0 ? pods[p] : undefined;
      const env = {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        CNI_COMMAND: command,
        TSFLANNEL_NETLINK_LIB: resolve(shim),
        TRAIN_EMBEDDED: resolve(embedded),
        TRAIN_BUNDLE: resolve(bundle),
        TRAIN_CACHE_IN: cache,
        TRAIN_CACHE_OUT: `${cache}.next`,
        ...(pod ? { CNI_CONTAINERID: `tsftrain${p}`, CNI_NETNS: pod.netns, CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' } : {}),
      };
      // CHECK is given the ADD's result, as a runtime does.
      const input = JSON.stringify(command === 'CHECK' ? { ...conf, prevResult: added[p] } : conf);
      const r = spawnSync(process.execPath, [SELF, 'child'], { env, input, encoding: 'utf8', timeout: 60_000 });
      const answer = r.stdout.trim();
      const parsed = answer === '' ? undefined : JSON.parse(answer);
      if (r.status !== 0 || (parsed && 'code' in parsed)) {
        throw new Error(`${command} failed (exit ${r.status ?? r.signal}): ${answer} ${r.stderr.trim()}`);
      }
      if (command === 'ADD') added[p] = parsed;
      if (!existsSync(`${cache}.next`)) throw new Error(`${command} wrote no code cache`);
      renameSync(`${cache}.next`, cache);
    }
    // A fresh process must accept it as the executable will.
    const check = spawnSync(process.execPath, [SELF, 'child'], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'VERSION', TRAIN_EMBEDDED: resolve(embedded), TRAIN_BUNDLE: resolve(bundle), TRAIN_CACHE_IN: cache },
      input: '',
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (check.status !== 0) throw new Error(`the trained cache is not accepted: ${check.stderr.trim()}`);
    copyFileSync(cache, out);
  } finally {
    for (const pod of pods) pod.proc.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  }
}

try {
  if (process.argv[2] === 'child') await child();
  else parent(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`train-code-cache: ${err.message}\n`);
  process.exit(1);
}
