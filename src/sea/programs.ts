// The node tool and the agent live in a bundle of their own (src/main/
// programs.ts), loaded only when the single executable runs as one of them.
// The dispatcher and plugin bundle holds only the CNI plugin: a runtime
// starts the plugin for every pod, and the time V8 takes to start a script
// grows with its size even with a code cache (7 MB cost about 25 ms per
// call, the plugin alone 8 ms). scripts/package.sh embeds this bundle with
// V8's code cache for it (src/sea/embedded.ts runs both).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as sea from 'node:sea';
import { runEmbedded } from './embedded.js';

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

/**
 * The program's module: from the executable when it is a SEA, else from the
 * bundle file beside the running one (`node dist/bundle/tsflannel.cjs`).
 */
export function loadProgram(which: ProgramName, here: string): Promise<ProgramModule> {
  const bundle = sea.isSea() ? (runEmbedded(PROGRAMS_BUNDLE) as ProgramsBundle) : (createRequire(here)(join(dirname(here), PROGRAMS_BUNDLE)) as ProgramsBundle);
  return bundle.programs[which]();
}
