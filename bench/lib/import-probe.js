// Start-up probe, run as its own process: `node import-probe.js [module] [call]`.
// Prints { bootMs, importMs, callMs } where bootMs is the time from process
// start (performance.timeOrigin) to this module's first line, importMs how
// long importing `module` took and callMs the first netlink call when `call`
// is given (that is when koffi and the Go shim load). Bare specifiers resolve
// from the repository's node_modules.
const bootMs = performance.now();
const [spec, call] = process.argv.slice(2);
let importMs = 0;
let callMs = 0;
if (spec) {
  const t0 = performance.now();
  const mod = await import(spec);
  importMs = performance.now() - t0;
  if (call === 'netlink') {
    const t1 = performance.now();
    mod.linkByName('lo');
    callMs = performance.now() - t1;
  }
}
process.stdout.write(JSON.stringify({ bootMs, importMs, callMs }) + '\n');
