// A ping running at 10/s between two pods while something happens to the
// cluster, and the loss it counted when stopped.
import { spawn, type ChildProcess } from 'node:child_process';

export interface Pinger {
  child: ChildProcess;
  output: string;
}

export interface PingStats {
  sent: number;
  received: number;
  lost: number;
}

/** Starts `ping -i 0.1` from a pod's netns to an address. */
export function startPing(from: { ns: string }, to: { ip: string }): Pinger {
  const child = spawn('ip', ['netns', 'exec', from.ns, 'ping', '-n', '-i', '0.1', '-W', '1', to.ip]);
  const p: Pinger = { child, output: '' };
  child.stdout?.on('data', (d: Buffer) => (p.output += d.toString()));
  return p;
}

/** Stops it with SIGINT and reads its summary line. */
export async function stopPing(p: Pinger): Promise<PingStats> {
  p.child.kill('SIGINT');
  // 'close', not 'exit': ping's summary may still be in the stdout pipe when the process exits.
  await new Promise((r) => p.child.once('close', r));
  const m = /(\d+) packets transmitted, (\d+) received/.exec(p.output);
  if (!m) throw new Error(`no ping summary in: ${p.output.slice(-300)}`);
  const sent = Number(m[1]);
  const received = Number(m[2]);
  return { sent, received, lost: sent - received };
}
