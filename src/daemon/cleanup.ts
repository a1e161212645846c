// `tsflanneld --cleanup`: the explicit way to take tsflannel's iptables
// rules off a node. A stopping agent (SIGTERM or SIGKILL) leaves them in
// place, as flanneld does, so pods keep their masqueraded source while a
// rolling update replaces the agent; only an uninstall should remove them.
import type { Logger } from 'pino';
import { readSubnetEnv } from '../flannel/subnet-env.js';
import { IptablesManager, FORWARD_CHAIN, MASQ_CHAIN } from './iptables.js';

/**
 * The jumps and chains do not depend on the subnet, so a node whose
 * subnet file is gone is cleaned all the same; these stand in for it.
 */
const PLACEHOLDER = { network: '10.244.0.0/16', subnet: '10.244.0.0/24' };

function subnetOrPlaceholder(subnetFile: string): { network: string; subnet: string } {
  try {
    const env = readSubnetEnv(subnetFile);
    return { network: env.network, subnet: env.subnet };
  } catch {
    return PLACEHOLDER;
  }
}

export async function cleanupRules(subnetFile: string, logger: Logger): Promise<void> {
  const { network, subnet } = subnetOrPlaceholder(subnetFile);
  const manager = new IptablesManager({ network, subnet, ipMasq: true, forwardRules: true, logger });
  await manager.remove();
  logger.info({ chains: [MASQ_CHAIN, FORWARD_CHAIN] }, 'clean-up done: removed the masquerade and forward rules and their jumps');
}
