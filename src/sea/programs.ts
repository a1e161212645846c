// The node tool and the agent live in a bundle of their own (src/main/
// programs.ts), loaded only when the single executable runs as one of them. The SEA's main script holds only the
// dispatcher and the CNI plugin: a runtime starts the plugin for every pod,
// and the time V8 takes to start a main script grows with its size even with
// a code cache (7 MB cost about 25 ms per call, the plugin alone 8 ms).
// scripts/package.sh embeds that bundle with V8's code cache for it, made by
// the same node; a cache V8 rejects (another node build) only costs time.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as sea from 'node:sea';
import { Script } from 'node:vm';

export interface ProgramModule {
  main(): Promise<void>;
}

export type ProgramName = 'tool' | 'agent';

/** What the programs bundle exports (src/main/programs.ts). */
interface ProgramsBundle {
  programs: Record<ProgramName, () => Promise<ProgramModule>>;
}

/** The bundle's file name in dist/bundle/ and its SEA asset name. */
export const PROGRAMS_BUNDLE = 'tsflannel-programs.cjs';

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

function runEmbedded(bundle: string): ProgramsBundle {
  const source = sea.getAsset(bundle, 'utf8');
  const filename = join(dirname(process.execPath), bundle);
  const cachedData = optionalAsset(codeCacheAsset(bundle));
  const script = new Script(wrapCommonJs(source), { filename, ...(cachedData ? { cachedData } : {}) });
  const fn = script.runInThisContext() as (e: object, r: NodeJS.Require, m: { exports: object }, f: string, d: string) => void;
  const mod = { exports: {} };
  // The SEA's own require sees only built-ins; the bundles need no more.
  fn(mod.exports, createRequire(filename), mod, filename, dirname(filename));
  return mod.exports as ProgramsBundle;
}

/**
 * The program's module: from the executable when it is a SEA, else from the
 * bundle file beside the running one (`node dist/bundle/tsflannel.cjs`).
 */
export function loadProgram(which: ProgramName, here: string): Promise<ProgramModule> {
  const bundle = sea.isSea() ? runEmbedded(PROGRAMS_BUNDLE) : (createRequire(here)(join(dirname(here), PROGRAMS_BUNDLE)) as ProgramsBundle);
  return bundle.programs[which]();
}
