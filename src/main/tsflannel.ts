// Entry point of the single-executable tsflannel (scripts/package.sh bundles
// it): the same dispatch as bin/tsflannel. Runtimes set CNI_COMMAND; people
// get the node tool. Both imports are bundled but evaluated only when taken.
const CNI_ERROR_VERSION = '1.1.0';

function fail(err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`tsflannel: ${e.stack ?? e.message}\n`);
  if (process.env.CNI_COMMAND) {
    const msg = `tsflannel failed to start: ${e.message}`;
    process.stdout.write(`${JSON.stringify({ cniVersion: CNI_ERROR_VERSION, code: 999, msg })}\n`);
  }
  process.exitCode = 1;
}

const entry = process.env.CNI_COMMAND ? import('../plugin/main.js') : import('../cli/main.js');
entry.then((m) => m.main()).catch(fail);
