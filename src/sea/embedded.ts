// Runs a CommonJS bundle embedded in the single executable, with V8's code
// cache for it (both SEA assets written by scripts/package.sh). The SEA's
// own main script is a few lines (src/sea/main.ts) that run the dispatcher
// and plugin bundle this way: Node's `useCodeCache` caches only what V8
// compiles before a script runs (its top level), so every function a CNI
// call runs was compiled again on every call; the cache embedded here is
// written after the build ran the plugin (scripts/train-code-cache.mjs) and
// holds those functions too. A cache V8 rejects (another node build, other
// V8 flags) only costs time.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as sea from 'node:sea';
import { Script } from 'node:vm';

/** The dispatcher and plugin bundle (src/main/tsflannel.ts), as file in dist/bundle/ and as SEA asset. */
export const MAIN_BUNDLE = 'tsflannel.cjs';

/** The asset holding V8's code cache for a bundle. */
export function codeCacheAsset(bundle: string): string {
  return `${bundle}.v8cache`;
}

/** As Node wraps a CommonJS file. */
const WRAP_HEAD = '(function (exports, require, module, __filename, __dirname) { ';
const WRAP_TAIL = '\n})';

export function wrapCommonJs(source: string): string {
  return `${WRAP_HEAD}${source}${WRAP_TAIL}`;
}

type CommonJsBody = (e: object, r: NodeJS.Require, m: { exports: object }, f: string, d: string) => void;

/**
 * Compiles `source` as the CommonJS module `filename` (with `cachedData`
 * when given) and runs it; returns its exports and the compiled script,
 * whose cache scripts/train-code-cache.mjs writes. `scriptName` is the name
 * stack traces give it: V8 keeps the name a cache was written with, so the
 * build, the trainer and the executable all compile a bundle under its bare
 * name, never a path of the build machine.
 */
export function runCommonJs(source: string, filename: string, cachedData?: Buffer, scriptName = filename): { exports: unknown; script: Script } {
  const script = new Script(wrapCommonJs(source), { filename: scriptName, ...(cachedData ? { cachedData } : {}) });
  const fn = script.runInThisContext() as CommonJsBody;
  const mod = { exports: {} };
  // A SEA's own require sees only built-ins; the bundles need no more.
  fn(mod.exports, createRequire(filename), mod, filename, dirname(filename));
  return { exports: mod.exports, script };
}

function optionalAsset(name: string): Buffer | undefined {
  try {
    return Buffer.from(sea.getAsset(name));
  } catch {
    return undefined;
  }
}

/** Runs an embedded bundle as if it lay beside the executable; stack traces name it by its bare name. SEA only. */
export function runEmbedded(bundle: string): unknown {
  const filename = join(dirname(process.execPath), bundle);
  return runCommonJs(sea.getAsset(bundle, 'utf8'), filename, optionalAsset(codeCacheAsset(bundle)), bundle).exports;
}
