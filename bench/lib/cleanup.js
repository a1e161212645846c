// Cleanup registry shared by every benchmark. Steps run once, newest first,
// either when a benchmark finishes (runCleanups) or when the run is
// interrupted (SIGINT/SIGTERM/SIGHUP), so a Ctrl-C never leaves namespaces,
// temp dirs or driver processes behind. Steps must be synchronous: a signal
// handler cannot wait for promises reliably.

/** @type {{ label: string, fn: () => void }[]} */
const steps = [];
let installed = false;

/**
 * Registers a synchronous cleanup step; returns a function that runs it now
 * and unregisters it (for cleaning up early).
 * @param {string} label
 * @param {() => void} fn
 * @returns {() => void}
 */
export function onCleanup(label, fn) {
  const step = { label, fn };
  steps.push(step);
  return () => {
    const i = steps.indexOf(step);
    if (i >= 0) {
      steps.splice(i, 1);
      runStep(step);
    }
  };
}

function runStep(step) {
  try {
    step.fn();
  } catch (err) {
    process.stderr.write(`[bench] cleanup "${step.label}" failed: ${err && err.message ? err.message : err}\n`);
  }
}

/** Runs every registered step, newest first. */
export function runCleanups() {
  while (steps.length > 0) runStep(steps.pop());
}

/** Cleans up and exits on the usual interrupt signals (idempotent). */
export function installSignalCleanup() {
  if (installed) return;
  installed = true;
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  for (const [sig, code] of Object.entries(codes)) {
    process.on(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: cleaning up\n`);
      runCleanups();
      process.exit(code);
    });
  }
  // An uncaught error still removes what was made.
  process.on('exit', runCleanups);
}
