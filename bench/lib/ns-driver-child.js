// Runs inside a node netns (started by ns-driver.js through `ip netns exec`),
// so the processes it spawns inherit that namespace without a wrapper exec
// in their timing. Protocol: one JSON request per stdin line,
// { id, jobs, concurrency }, answered by one JSON line { id, results, wallMs, cpuMs }
// or { id, error }.
import { createInterface } from 'node:readline';
import { runPool } from './spawn.js';

const rl = createInterface({ input: process.stdin });
// Requests are handled one at a time so batches never overlap.
let queue = Promise.resolve();

rl.on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let id = null;
    try {
      const req = JSON.parse(line);
      id = req.id;
      const out = await runPool(req.jobs, req.concurrency ?? 1);
      process.stdout.write(JSON.stringify({ id, ...out }) + '\n');
    } catch (err) {
      process.stdout.write(JSON.stringify({ id, error: String(err && err.stack ? err.stack : err) }) + '\n');
    }
  });
});
rl.on('close', () => {
  queue.then(() => process.exit(0));
});
