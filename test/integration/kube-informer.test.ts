// Why watchLeases keeps its own list/watch loop: @kubernetes/client-node's
// informer (makeInformer, the ListWatch in cache.js), run for real against the
// same Kubernetes-shaped API server that test/integration/kube-subnet.test.ts
// uses, breaks guarantees the agent's loop keeps. Each test here names one;
// docs/architecture.md ("Why the Kubernetes watch is hand-written") cites them.
// If a client-node upgrade makes one of these fail, re-evaluate the informer.
import { afterEach, describe, expect, it } from 'vitest';
import { CoreV1Api, makeInformer, type V1Node } from '@kubernetes/client-node';
import { FakeKube } from '../helpers/fake-kube.js';
import { loadKubeConfig } from '../../src/daemon/subnet/kube.js';

const P = 'flannel.alpha.coreos.com';
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function startFake(): Promise<FakeKube> {
  const fake = await FakeKube.start();
  cleanups.push(() => fake.close());
  fake.addNode('node-a', '10.244.1.0/24', { [`${P}/public-ip`]: '192.168.50.1' });
  fake.addNode('node-b', '10.244.2.0/24', { [`${P}/public-ip`]: '192.168.50.2' });
  return fake;
}

type ListNodes = () => ReturnType<CoreV1Api['listNode']>;

/** The informer as an agent would build it: client-node's own kubeconfig, Watch and typed list call. */
function informerFor(fake: FakeKube, wrapList: (list: ListNodes) => ListNodes = (l) => l) {
  const { config } = loadKubeConfig({ apiServerUrl: fake.url }, {});
  const api = config.makeApiClient(CoreV1Api);
  const informer = makeInformer<V1Node>(config, '/api/v1/nodes', wrapList(() => api.listNode({})));
  const errors: unknown[] = [];
  informer.on('error', (err) => errors.push(err));
  cleanups.push(() => informer.stop());
  return { informer, errors };
}

async function waitFor(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const lists = (fake: FakeKube): number => fake.requests.filter((r) => r.verb === 'list').length;
const publicIP = (node: V1Node | undefined): string | undefined => node?.metadata?.annotations?.[`${P}/public-ip`];

describe('the client-node informer against the agent guarantees', () => {
  it('never re-lists on its own: a Node change whose watch event was lost stays unseen while the watch is open', async () => {
    const fake = await startFake();
    const { informer } = informerFor(fake);
    await informer.start();
    await waitFor('watch open', () => fake.openWatches === 1);
    expect(publicIP(informer.get('node-b'))).toBe('192.168.50.2');

    fake.setAnnotations('node-b', { [`${P}/public-ip`]: '192.168.50.99' }, { notify: false });
    // The agent's loop re-lists every resyncSeconds (2 s in kube-subnet.test.ts's resync test);
    // makeInformer takes no resync period at all, so it keeps the stale lease.
    await new Promise((r) => setTimeout(r, 2500));
    expect(publicIP(informer.get('node-b'))).toBe('192.168.50.2');
    expect(lists(fake)).toBe(1);
  });

  it('gives up after a watch error: a reset stream leaves it stopped with no watch and no retry', async () => {
    const fake = await startFake();
    const { informer, errors } = informerFor(fake);
    await informer.start();
    await waitFor('watch open', () => fake.openWatches === 1);
    const requests = fake.requests.length;

    fake.closeWatches('abrupt');
    await waitFor('error reported', () => errors.length === 1);
    fake.addNode('node-c', '10.244.3.0/24', { [`${P}/public-ip`]: '192.168.50.3' });
    await new Promise((r) => setTimeout(r, 500));
    expect(fake.openWatches).toBe(0);
    expect(fake.requests.length).toBe(requests);
    expect(informer.get('node-c')).toBeUndefined();
  });

  it('cannot be stopped while its list is in flight: stop() returns, then it opens a watch anyway', async () => {
    const fake = await startFake();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { informer } = informerFor(fake, (list) => async () => {
      const result = await list();
      await gate;
      return result;
    });
    const started = informer.start();
    await waitFor('list answered', () => lists(fake) === 1);

    await informer.stop();
    release();
    await started;
    await waitFor('watch opened after stop()', () => fake.openWatches === 1, 2000);
    await new Promise((r) => setTimeout(r, 200));
    expect(fake.openWatches).toBe(1);
    expect(fake.requests.filter((r) => r.verb === 'watch')).toHaveLength(1);
    // Only a second stop() (after the fact) ends it: an AbortSignal-driven agent has no such hook.
    await informer.stop();
    await waitFor('watch closed', () => fake.openWatches === 0);
  });
});
