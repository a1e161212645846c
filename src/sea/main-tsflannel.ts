// Entry point of the single-executable tsflannel (scripts/package.sh bundles
// it): the same dispatch as bin/tsflannel. Runtimes set CNI_COMMAND; people
// get the node tool. Both imports are bundled but evaluated only when taken.
const CNI_ERROR_VERSION = '1.1.0';

/** As bin/tsflannel: CNI_COMMAND set (even to ''), or a runtime-style call without it. */
const asPlugin =
  process.env.CNI_COMMAND !== undefined ||
  (process.argv.length <= 2 && ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'].some((k) => process.env[k] !== undefined));

function fail(err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`tsflannel: ${e.stack ?? e.message}\n`);
  if (asPlugin) {
    const msg = `tsflannel failed to start: ${e.message}`;
    process.stdout.write(`${JSON.stringify({ cniVersion: CNI_ERROR_VERSION, code: 999, msg })}\n`);
  }
  process.exitCode = 1;
}

const entry = asPlugin ? import('../plugin/main.js') : import('../cli/main.js');
entry.then((m) => m.main()).catch(fail);
