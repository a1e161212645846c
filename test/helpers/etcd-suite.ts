// The hooks and helpers of a describe block that tests subnet managers
// against one real etcd (test/helpers/etcd.ts).
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { EtcdSubnetManager, type EtcdSubnetManagerOptions } from '../../src/daemon/subnet/etcd.js';
import { startEtcd, type EtcdServer } from './etcd.js';

/** What useEtcdSubnetSuite gives a describe block. */
export interface EtcdSubnetSuite {
  /** the suite's etcd (set in beforeAll) */
  readonly etcd: EtcdServer;
  /** a client of it for the test's own reads and writes (set in beforeAll) */
  readonly admin: Etcd3;
  /** A fresh key prefix per call, with net-conf written to <prefix>/config (none when conf is undefined). */
  network(conf: object | string | undefined): Promise<string>;
  /** A subnet manager on the suite's etcd, logging nothing unless opts says, closed after the test. */
  manager(opts: Partial<EtcdSubnetManagerOptions> & { prefix: string }): EtcdSubnetManager;
  /** Closed after the test, once its managers are. */
  closeAfterEach(c: { close(): unknown }): void;
}

/**
 * Registers the hooks of a describe block that tests subnet managers against
 * one real etcd: started before the block, stopped after it; managers (then
 * whatever closeAfterEach got) closed after each test. tag starts the prefixes.
 */
export function useEtcdSubnetSuite(tag: string): EtcdSubnetSuite {
  let etcd: EtcdServer | undefined;
  let admin: Etcd3 | undefined;
  const managers: EtcdSubnetManager[] = [];
  const others: { close(): unknown }[] = [];
  let prefixCount = 0;

  beforeAll(async () => {
    etcd = await startEtcd();
    admin = new Etcd3({ hosts: etcd.endpoint });
  });

  afterEach(async () => {
    await Promise.all(managers.splice(0).map((m) => m.close()));
    await Promise.all(others.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    admin?.close();
    await etcd?.stop();
  });

  return {
    get etcd() {
      return etcd!;
    },
    get admin() {
      return admin!;
    },
    async network(conf) {
      const prefix = `/${tag}-${process.pid}-${++prefixCount}/network`;
      if (conf !== undefined) await admin!.put(`${prefix}/config`).value(typeof conf === 'string' ? conf : JSON.stringify(conf));
      return prefix;
    },
    manager(opts) {
      const m = new EtcdSubnetManager({ endpoints: [etcd!.endpoint], logger: pino({ level: 'silent' }), ...opts });
      managers.push(m);
      return m;
    },
    closeAfterEach(c) {
      others.push(c);
    },
  };
}
