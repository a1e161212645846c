// Appends a test agent's stderr to its log file. Output can still arrive
// while the suite's clean-up removes the run's directory (the agent flushing
// as it is stopped): that last output is dropped rather than thrown as an
// uncaught error from a stream handler, which would fail the whole run.
import { appendFileSync } from 'node:fs';

export function appendLog(file: string): (chunk: Buffer) => void {
  return (chunk) => {
    try {
      appendFileSync(file, chunk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  };
}
