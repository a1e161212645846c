// One iperf3 TCP attempt between two namespaces, as the throughput benchmarks
// run it: a one-off daemonised server (-1 -D, its pid in pidFile, so a caller
// can kill one left stuck), then the client with JSON output. Retrying and
// reading the figures stay with the caller.
import { spawnSync } from 'node:child_process';

/**
 * @returns {{ res: import('node:child_process').SpawnSyncReturns<string>, parsed: any }} the client's run, and its
 *   JSON report (undefined when stdout is not JSON)
 */
export function iperfAttempt({ clientNs, serverNs, serverIp, seconds, pidFile }) {
  const inNs = (ns, args, opts = {}) => spawnSync('ip', ['netns', 'exec', ns, 'iperf3', ...args], { encoding: 'utf8', ...opts });
  inNs(serverNs, ['-s', '-D', '-1', '--pidfile', pidFile]);
  const res = inNs(clientNs, ['-c', serverIp, '-t', String(seconds), '-J', '--connect-timeout', '3000'], {
    timeout: (seconds + 15) * 1000,
  });
  let parsed;
  try {
    parsed = JSON.parse(res.stdout);
  } catch {
    parsed = undefined;
  }
  return { res, parsed };
}
