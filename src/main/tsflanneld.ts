// Entry point of the single-executable tsflanneld (scripts/package.sh
// bundles it): the same as bin/tsflanneld.
import('../daemon/main.js')
  .then((m) => m.main())
  .catch((err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    process.stderr.write(`tsflanneld: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  });
