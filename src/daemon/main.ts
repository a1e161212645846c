// Entry point of tsflanneld.
import type { Logger } from 'pino';
import { parseAgentOptions, HelpShown, OptionsError, VersionShown, type AgentOptions } from './options.js';
import { Agent } from './agent.js';
import type { SubnetManager } from './types.js';
import { createAgentLogger } from './logging.js';
import { defaultMetrics, subnetMetrics, type AgentMetrics } from './metrics.js';
import { VERSION } from '../version.js';

async function subnetManagerFor(opts: AgentOptions, logger: Logger, metrics: AgentMetrics, stopping: AbortSignal): Promise<SubnetManager> {
  if (opts.kubeSubnetMgr) {
    const { KubeSubnetManager } = await import('./subnet/kube.js');
    const kubeOpts: ConstructorParameters<typeof KubeSubnetManager>[0] = {
      nodeName: opts.nodeName,
      netConfPath: opts.netConfigPath,
      // A full re-list is only the safety net for a lost watch event: with thousands of agents, each
      // re-listing every Node every 30 s would be most of the API server's load.
      resyncSeconds: Math.max(opts.resyncSeconds, 300),
      annotationPrefix: opts.kubeAnnotationPrefix,
      setNodeNetworkUnavailable: opts.setNodeNetworkUnavailable,
      watchIdleTimeoutMs: opts.kubeWatchIdleTimeoutSeconds * 1000,
      metrics: subnetMetrics(metrics, 'kube'),
      logger,
    };
    if (opts.kubeconfig) kubeOpts.kubeconfig = opts.kubeconfig;
    if (opts.kubeApiUrl) kubeOpts.apiServerUrl = opts.kubeApiUrl;
    return new KubeSubnetManager(kubeOpts);
  }
  const { EtcdSubnetManager } = await import('./subnet/etcd.js');
  const { checkEtcdAccess, usesTls } = await import('./subnet/etcd-client.js');
  if (!usesTls(opts.etcdEndpoints, opts.etcd)) {
    // flanneld's warning, word for word
    logger.warn({ endpoints: opts.etcdEndpoints }, 'connecting to etcd with http. This is insecure');
  }
  // A wrong CA, a missing client certificate or a wrong password never heals:
  // find out and exit naming the flag (etcd merely down is retried as usual).
  // Alongside start-up, not before it: a restart must not wait on this. It
  // goes on until it has a verdict (etcd down now may come up rejecting us),
  // and ends when the agent stops, or once the agent's own client has read
  // the config: the settings work then. A verdict after that would be
  // wrong: with a client certificate, drops after the handshake count as
  // a rejection, and an etcd restarting behind a TLS-terminating proxy
  // drops connections that way; the check, still going because its early
  // attempts had no verdict, made an agent that had its lease exit.
  const checking = new AbortController();
  stopping.addEventListener('abort', () => checking.abort(), { once: true });
  checkEtcdAccess(opts.etcdEndpoints, opts.etcd, `${opts.etcdPrefix.replace(/\/+$/, '')}/config`, {
    signal: checking.signal,
    onRetry: (reason, attempt) => logger.debug({ reason, attempt }, 'etcd access check: no verdict yet; checking again'),
  }).then((verdict) => {
    if (!verdict && !checking.signal.aborted) logger.warn('etcd access check: etcd took connections but never answered; stopped checking (the subnet manager keeps trying)');
  }, (err: unknown) => {
    if ((err as Error).name === 'EtcdAccessError') logger.fatal(`etcd: ${(err as Error).message}`);
    else logger.fatal({ err }, 'etcd access check failed');
    process.exit(1);
  });
  return new EtcdSubnetManager({
    endpoints: opts.etcdEndpoints,
    prefix: opts.etcdPrefix,
    security: opts.etcd,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    // flannel's margin is in minutes; a TTL shorter than it (tests) keeps the manager's default
    ...(opts.subnetLeaseRenewMarginMinutes * 60 < opts.leaseTtlSeconds ? { renewMarginSeconds: opts.subnetLeaseRenewMarginMinutes * 60 } : {}),
    nodeName: opts.nodeName,
    onConfigRead: () => checking.abort(),
    metrics: subnetMetrics(metrics, 'etcd'),
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
    if (err instanceof VersionShown) {
      process.stdout.write(`${err.text}\n`);
      return;
    }
    if (err instanceof OptionsError) {
      process.stderr.write(`tsflanneld: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const logger = createAgentLogger({ level: opts.logLevel, format: opts.logFormat, base: { node: opts.nodeName } });
  if (opts.cleanup) {
    const { cleanupRules } = await import('./cleanup.js');
    await cleanupRules(logger);
    return;
  }
  if (opts.cniOnly) {
    await serveCniOnly(opts, logger);
    return;
  }
  logger.info({ version: VERSION }, 'tsflanneld starting');
  const metrics = defaultMetrics();
  let subnetManager: SubnetManager;
  // ends background work the agent started beside itself (the etcd access check)
  const stopChecks = new AbortController();
  try {
    subnetManager = await subnetManagerFor(opts, logger, metrics, stopChecks.signal);
  } catch (err) {
    const name = (err as Error).name;
    // settings problems get one line naming the flag, no stack
    if (name === 'EtcdAccessError') logger.fatal(`etcd: ${(err as Error).message}`);
    else logger.fatal({ err }, 'cannot create the subnet manager');
    process.exit(1);
  }
  const agent = new Agent(opts, { subnetManager, logger, metrics });

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    stopChecks.abort();
    // Rules stay too: a pod's new connections must stay masqueraded until the
    // next agent is up. `tsflanneld --cleanup` removes them on uninstall.
    logger.info({ signal }, 'shutting down; routes, leases and iptables rules stay in place');
    agent.stop(false).then(
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
    stopChecks.abort();
    await agent.stop(false).catch(() => undefined);
    process.exit(1);
  }
}

/**
 * --cni-only: the CNI socket and /healthz without a subnet manager, for the
 * test suites and the benchmark, which write the subnet file themselves.
 */
async function serveCniOnly(opts: AgentOptions, logger: Logger): Promise<void> {
  const { startEndpoints } = await import('./health.js');
  const { startCniService } = await import('./cni-service.js');
  const { createAgentMetrics } = await import('./metrics.js');
  const metrics = createAgentMetrics();
  const up = { ok: true, detail: 'serving CNI calls' };
  const health =
    opts.healthzPort > 0
      ? await startEndpoints(opts.healthzIP, opts.healthzPort, { health: { live: () => up, ready: () => up }, registry: metrics.registry })
      : undefined;
  let cni;
  try {
    cni = await startCniService({ path: opts.cniSocket, workers: opts.cniWorkers, logger, log: { level: opts.logLevel, format: opts.logFormat }, metrics });
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'cannot serve CNI calls');
    health?.close();
    process.exitCode = 1;
    return;
  }
  metrics.ready.set(1);
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
