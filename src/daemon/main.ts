// Entry point of tsflanneld.
import pino from 'pino';
import { parseAgentOptions, HelpShown, OptionsError, type AgentOptions } from './options.js';
import { Agent } from './agent.js';
import type { SubnetManager } from './types.js';

async function subnetManagerFor(opts: AgentOptions, logger: pino.Logger): Promise<SubnetManager> {
  if (opts.kubeSubnetMgr) {
    const { KubeSubnetManager } = await import('./subnet/kube.js');
    const kubeOpts: ConstructorParameters<typeof KubeSubnetManager>[0] = {
      nodeName: opts.nodeName,
      netConfPath: opts.netConfigPath,
      resyncSeconds: Math.max(opts.resyncSeconds, 30),
      logger,
    };
    if (opts.kubeconfig) kubeOpts.kubeconfig = opts.kubeconfig;
    if (opts.kubeApiUrl) kubeOpts.apiServerUrl = opts.kubeApiUrl;
    return new KubeSubnetManager(kubeOpts);
  }
  const { EtcdSubnetManager } = await import('./subnet/etcd.js');
  return new EtcdSubnetManager({
    endpoints: opts.etcdEndpoints,
    prefix: opts.etcdPrefix,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    nodeName: opts.nodeName,
    logger,
    // Another node took our subnet while we were cut off: like flanneld, stop
    // and let the supervisor restart us with a fresh lease.
    onLeaseLost: (reason: string) => {
      logger.fatal({ reason }, 'subnet lease lost; exiting');
      process.exit(1);
    },
  });
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  let opts: AgentOptions;
  try {
    opts = parseAgentOptions(argv, process.env);
  } catch (err) {
    if (err instanceof HelpShown) return;
    if (err instanceof OptionsError) {
      process.stderr.write(`tsflanneld: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const logger = pino({ level: opts.logLevel, base: { node: opts.nodeName } }, pino.destination({ fd: 2, sync: true }));
  if (opts.cniOnly) {
    await serveCniOnly(opts, logger);
    return;
  }
  const agent = new Agent(opts, { subnetManager: await subnetManagerFor(opts, logger), logger });

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down; routes and leases stay in place');
    agent.stop(true).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  try {
    await agent.run();
  } catch (err) {
    if (stopping) return;
    logger.fatal({ err }, 'tsflanneld failed');
    await agent.stop(false).catch(() => undefined);
    process.exit(1);
  }
}

/**
 * --cni-only: the CNI socket and /healthz without a subnet manager, for the
 * test suites and the benchmark, which write the subnet file themselves.
 */
async function serveCniOnly(opts: AgentOptions, logger: pino.Logger): Promise<void> {
  const { newMetrics, startHealthServer } = await import('./health.js');
  const { startCniService } = await import('./cni-service.js');
  const metrics = newMetrics();
  const health = opts.healthzPort > 0 ? await startHealthServer(opts.healthzIP, opts.healthzPort, metrics) : undefined;
  let cni;
  try {
    cni = await startCniService({ path: opts.cniSocket, workers: opts.cniWorkers, logger, metrics: metrics.cni });
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'cannot serve CNI calls');
    health?.close();
    process.exitCode = 1;
    return;
  }
  metrics.ready = true;
  const service = cni;
  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down the CNI server');
    void service.stop().finally(() => {
      health?.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
