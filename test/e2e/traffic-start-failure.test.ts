// An agent whose first rule set-up fails (the xtables lock held longer than
// iptables waits) keeps running: it warns, counts the failure, stays alive
// but not ready, holds the subnet file back (no pod is wired without its
// masquerade; an earlier run's file naming another subnet is removed), and
// the periodic resync installs the rules once iptables answers again.
// iptables is failed through a wrapper in front of PATH, in the agent's
// environment only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, type AgentProc } from '../../src/demo/cluster.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually, timeUntil } from '../helpers/eventually.js';

const HEALTHZ_PORT = 18082;
const MASQ_JUMP = ['-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG'];

/** An HTTP GET made from inside a netns (the health port listens on the node's loopback). */
function httpIn(ns: string, path: string): { status: number; body: string } {
  const script = `fetch(process.argv[1]).then(async r=>{process.stdout.write(JSON.stringify({status:r.status,body:await r.text()}))}).catch(e=>{console.error(e);process.exit(1)})`;
  const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script, `http://127.0.0.1:${HEALTHZ_PORT}${path}`], { encoding: 'utf8', timeout: 10_000 });
  return JSON.parse(out) as { status: number; body: string };
}

function iptables(ns: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', ...args], { encoding: 'utf8' });
}

describe.skipIf(requireOrSkip('traffic start failure', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('an agent whose first rule set-up fails', () => {
  const cluster = new Cluster({
    prefix: `tsfrsf${randomBytes(2).toString('hex')}`,
    // two nodes: the harness keeps a node's etcd bridge only while another agent runs
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
    ],
    resyncSeconds: 2,
    extraAgentArgs: ['--healthz-port', String(HEALTHZ_PORT), '--healthz-ip', '127.0.0.1'],
  });
  const dir = mkdtempSync(join(tmpdir(), 'tsf-rsf-'));
  const lockHeld = join(dir, 'lock-held');

  beforeAll(async () => {
    // iptables as a held xtables lock makes it answer (exit 4), while `lockHeld` exists
    const real = execFileSync('sh', ['-c', 'command -v iptables'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(dir, 'iptables'),
      `#!/bin/sh\nif [ -e '${lockHeld}' ]; then echo 'Another app is currently holding the xtables lock. Stopped waiting after 5s.' >&2; exit 4; fi\nexec '${real}' "$@"\n`,
    );
    chmodSync(join(dir, 'iptables'), 0o755);
    await cluster.start();
  }, 90_000);
  afterAll(async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('keeps running, alive but not ready and without a subnet file, then the resync installs the rules and it becomes ready', async () => {
    const ns = cluster.node('n1').ns;
    // No rules, and an earlier run's subnet file for a subnet that is not to be had any more.
    await cluster.stopAgent('n1', 'SIGKILL');
    iptables(ns, ['-t', 'nat', '-D', 'POSTROUTING', ...MASQ_JUMP]);
    iptables(ns, ['-t', 'nat', '-F', 'FLANNEL-POSTRTG']);
    iptables(ns, ['-t', 'nat', '-X', 'FLANNEL-POSTRTG']);
    const file = cluster.subnetFile('n1');
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^FLANNEL_SUBNET=.*$/m, 'FLANNEL_SUBNET=10.99.0.1/24'));
    writeFileSync(lockHeld, '');
    const agent: AgentProc = await cluster.startAgent('n1', [], { PATH: `${dir}:${process.env.PATH ?? '/usr/sbin:/usr/bin'}` });

    const exited = () => agent.child.exitCode !== null || agent.child.signalCode !== null;
    await eventually('n1 warns that the first rule set-up failed (or exits)', 30_000, () => exited() || cluster.agentLog('n1').includes('could not install the traffic rules at start'));
    expect(exited(), `the agent exited: ${cluster.agentLog('n1').slice(-1500)}`).toBe(false);
    // two resync periods with the lock still held
    await eventually('n1 retried in a resync', 15_000, () => cluster.agentLog('n1').includes('checking the traffic rules failed'));
    await new Promise((r) => setTimeout(r, 4_000));
    expect(exited(), `the agent exited: ${cluster.agentLog('n1').slice(-1500)}`).toBe(false);
    expect(httpIn(ns, '/healthz')).toEqual({ status: 200, body: 'ok: alive\n' });
    expect(httpIn(ns, '/readyz')).toEqual({ status: 503, body: 'not ready: waiting for rulesInstalled, subnetFileWritten, firstReconcileDone\n' });
    // the old file is gone: no pod is wired on the old subnet, nor before the rules are in
    expect(existsSync(file)).toBe(false);
    expect(cluster.agentLog('n1')).toContain('removed the subnet file of the previous subnet');
    const failures = /^tsflannel_traffic_rule_failures_total\{mode="iptables"\} (\d+)$/m.exec(httpIn(ns, '/metrics').body);
    expect(Number(failures?.[1])).toBeGreaterThanOrEqual(2);

    // The lock is free again: the next resync installs the rules, writes the subnet file, and the agent is ready.
    rmSync(lockHeld);
    const ms = await timeUntil('n1 ready', 20_000, () => httpIn(ns, '/readyz').status === 200);
    console.log(`traffic-start-failure: ${failures?.[1]} failed rule set-ups counted; ready ${ms} ms after the lock was freed (--resync-period 2)`);
    expect(iptables(ns, ['-t', 'nat', '-S', 'POSTROUTING'])).toContain('-j FLANNEL-POSTRTG');
    expect(iptables(ns, ['-t', 'nat', '-S', 'FLANNEL-POSTRTG'])).toContain('-j MASQUERADE');
    expect(readFileSync(file, 'utf8')).toMatch(/^FLANNEL_SUBNET=10\.244\.\d+\.1\/24$/m);
    // The agent wrote its line before it became ready; this process reads the
    // agent's stderr pipe only when its event loop turns, and the checks above
    // run synchronously (curl and iptables through execFileSync).
    await eventually('n1 logs that the rules are in', 5_000, () => cluster.agentLog('n1').includes('installed the traffic rules'));
  }, 90_000);
});
