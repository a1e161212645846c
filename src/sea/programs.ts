// The node tool and the agent as separate bundles, loaded only when the
// single executable runs as one of them. The SEA's main script holds only the
// dispatcher and the CNI plugin: a runtime starts the plugin for every pod,
// and the time V8 takes to start a main script grows with its size even with
// a code cache (7 MB cost about 25 ms per call, the plugin alone 8 ms).
// scripts/package.sh embeds each bundle with V8's code cache for it, made by
// the same node; a cache V8 rejects (another node build) only costs time.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as sea from 'node:sea';
import { Script } from 'node:vm';

export interface ProgramModule {
  main(): Promise<void>;
}

export type ProgramBundle = 'tool' | 'agent';

/** The bundle file (dist/bundle/) and SEA asset name of each program. */
export const PROGRAM_BUNDLES: Record<ProgramBundle, string> = { tool: 'tsflannel-tool.cjs', agent: 'tsflanneld.cjs' };

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

function optionalAsset(name: string): Buffer | undefined {
  try {
    return Buffer.from(sea.getAsset(name));
  } catch {
    return undefined;
  }
}

function runEmbedded(bundle: string): ProgramModule {
  const source = sea.getAsset(bundle, 'utf8');
  const filename = join(dirname(process.execPath), bundle);
  const cachedData = optionalAsset(codeCacheAsset(bundle));
  const script = new Script(wrapCommonJs(source), { filename, ...(cachedData ? { cachedData } : {}) });
  const fn = script.runInThisContext() as (e: object, r: NodeJS.Require, m: { exports: object }, f: string, d: string) => void;
  const mod = { exports: {} };
  // The SEA's own require sees only built-ins; the bundles need no more.
  fn(mod.exports, createRequire(filename), mod, filename, dirname(filename));
  return mod.exports as ProgramModule;
}

/**
 * The program's module: from the executable when it is a SEA, else the
 * bundle file beside the running one (`node dist/bundle/tsflannel.cjs`).
 */
export function loadProgram(which: ProgramBundle, here: string): ProgramModule {
  const bundle = PROGRAM_BUNDLES[which];
  if (sea.isSea()) return runEmbedded(bundle);
  return createRequire(here)(join(dirname(here), bundle)) as ProgramModule;
}
