// The kube lease source of status/doctor against an in-process fake API
// server: leases from flannel's Node annotations, our Node's podCIDR (or why
// it has none), net-conf.json, and an API server that does not answer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { FakeKube } from '../../helpers/fake-kube.js';
import { readClusterView } from '../../../src/cli/checks/source.js';
import { parseNodeToolArgs } from '../../../src/cli/checks/options.js';
import { NODE_TOOL_DEFAULTS } from '../../helpers/node-tool.js';

const toolDefaults = NODE_TOOL_DEFAULTS;

const ann = (ip: string, mac: string) => ({
  'flannel.alpha.coreos.com/backend-data': JSON.stringify({ VNI: 1, VtepMAC: mac }),
  'flannel.alpha.coreos.com/backend-type': 'vxlan',
  'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
  'flannel.alpha.coreos.com/public-ip': ip,
});

describe('kube lease source', () => {
  let kube: FakeKube;
  let dir: string;
  let netConf: string;

  beforeAll(async () => {
    kube = await FakeKube.start();
    dir = mkdtempSync(join(tmpdir(), 'tsf-source-'));
    netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4}}');
    kube.addNode('n1', '10.244.1.0/24', ann('192.168.1.10', '0a:00:00:00:00:01'));
    kube.addNode('n2', '10.244.2.0/24', ann('192.168.1.11', '0a:00:00:00:00:02'));
    kube.addNode('fresh', undefined);
    kube.addNode('plain', '10.244.3.0/24');
  });
  afterAll(async () => {
    await kube.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads every annotated Node as a lease, and our Node\'s podCIDR', async () => {
    const view = await readClusterView({ kind: 'kube', nodeName: 'n1', netConfigPath: netConf, apiServerUrl: kube.url });
    expect(view.error).toBeUndefined();
    expect(view.config?.backend).toMatchObject({ type: 'vxlan', vni: 4 });
    expect(view.leases!.map((l) => [l.nodeName, l.subnet, l.publicIP, l.backendData.VtepMAC])).toEqual([
      ['n1', '10.244.1.0/24', '192.168.1.10', '0a:00:00:00:00:01'],
      ['n2', '10.244.2.0/24', '192.168.1.11', '0a:00:00:00:00:02'],
    ]);
    expect(view.node).toEqual({ name: 'n1', found: true, podCIDR: '10.244.1.0/24' });
    // status and doctor only list: they never patch or watch.
    expect(kube.requests.map((r) => `${r.verb} ${r.resource}`)).toEqual(['list nodes']);
  });

  it('reads the annotations under the agent\'s --kube-annotation-prefix when given the same prefix', async () => {
    const custom = Object.fromEntries(Object.entries(ann('192.168.1.12', '0a:00:00:00:00:03')).map(([k, v]) => [k.replace('flannel.alpha.coreos.com', 'net2.example.com'), v]));
    kube.addNode('n3', '10.244.4.0/24', custom);
    try {
      const view = await readClusterView({ kind: 'kube', nodeName: 'n3', netConfigPath: netConf, apiServerUrl: kube.url, annotationPrefix: 'net2.example.com' });
      expect(view.error).toBeUndefined();
      expect(view.leases!.map((l) => [l.nodeName, l.subnet, l.publicIP])).toEqual([['n3', '10.244.4.0/24', '192.168.1.12']]);
      expect(view.node).toEqual({ name: 'n3', found: true, podCIDR: '10.244.4.0/24' });
      expect(parseNodeToolArgs({ ...toolDefaults, 'kube-subnet-mgr': true, 'kube-annotation-prefix': 'net2.example.com' }, { NODE_NAME: 'n3' }).source)
        .toMatchObject({ kind: 'kube', annotationPrefix: 'net2.example.com' });
    } finally {
      kube.deleteNode('n3');
    }
  });

  it('says why our Node has no lease: no podCIDR, or no annotations; and a missing net-conf.json', async () => {
    const fresh = await readClusterView({ kind: 'kube', nodeName: 'fresh', netConfigPath: join(dir, 'absent.json'), apiServerUrl: kube.url });
    expect(fresh.node).toEqual({ name: 'fresh', found: true, podCIDRReason: 'spec.podCIDR is not assigned', leaseReason: expect.stringContaining('kube-subnet-manager') });
    expect(fresh.configError).toBe(`${join(dir, 'absent.json')}: ENOENT`);
    const plain = await readClusterView({ kind: 'kube', nodeName: 'plain', netConfigPath: netConf, apiServerUrl: kube.url });
    expect(plain.node).toMatchObject({ found: true, podCIDR: '10.244.3.0/24', leaseReason: expect.stringContaining('is not "true"') });
    const ghost = await readClusterView({ kind: 'kube', nodeName: 'ghost', netConfigPath: netConf, apiServerUrl: kube.url });
    expect(ghost.node).toEqual({ name: 'ghost', found: false });
  });

  it('reports an API server that accepts connections but never answers, within the timeout', async () => {
    const silent: Server = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as { port: number }).port;
    try {
      const started = Date.now();
      const view = await readClusterView({ kind: 'kube', nodeName: 'n1', netConfigPath: netConf, apiServerUrl: `http://127.0.0.1:${port}` }, 200);
      expect(view.error).toContain('no answer within 400 ms');
      expect(view.leases).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      silent.close();
    }
  });

  it('etcd that is not there is an error in the view, not an exception', async () => {
    const view = await readClusterView({ kind: 'etcd', endpoints: ['http://127.0.0.1:1'], prefix: '/coreos.com/network' }, 300);
    expect(view.source).toBe('etcd');
    expect(view.error).toBeTruthy();
    expect(view.error).not.toContain('Resolution note');
    expect(view.leases).toBeUndefined();
  });
});
