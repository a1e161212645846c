// Entry point of the single executable (scripts/package.sh bundles it, and
// the executable's main script, src/sea/main.ts, runs the bundle): one
// file serves every program, because each copy of Node costs ~85 MB. Which
// program runs is named by a first argument (`tsflannel tsflanneld --help`)
// or else by the name it was started under, argv[0]'s basename: the image
// links tsflanneld to it, and `tsflannel install` copies it into the CNI bin
// dir as tsflannel-standalone. Only the plugin is in this bundle: the agent
// and the node tool are a bundle of their own (src/sea/programs.ts), so a
// CNI call neither loads nor even compiles them.
import { fileURLToPath } from 'node:url';
import { programFor, type Program } from './dispatch.js';

const CNI_ERROR_VERSION = '1.1.0';

const program: Program = programFor(process.argv0, process.argv, process.env);
// The chosen program's flags start at argv[2], as when it is its own file.
if (program.consumedArg) process.argv.splice(2, 1);

function fail(err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`${program.name}: ${e.stack ?? e.message}\n`);
  if (program.kind === 'plugin') {
    const msg = `tsflannel failed to start: ${e.message}`;
    process.stdout.write(`${JSON.stringify({ cniVersion: CNI_ERROR_VERSION, code: 999, msg })}\n`);
  }
  process.exitCode = 1;
}

const entry =
  program.kind === 'plugin'
    ? import('../plugin/main.js')
    : import('../sea/programs.js').then(({ loadProgram }) => loadProgram(program.kind === 'agent' ? 'agent' : 'tool', fileURLToPath(import.meta.url)));
entry.then((m) => m.main()).catch(fail);
