// The flags status and doctor see when a person gives none (yargs' defaults
// in src/cli/checks/options.ts), for tests that call parseNodeToolArgs directly.
import type { RawNodeToolArgs } from '../../src/cli/checks/options.js';

export const NODE_TOOL_DEFAULTS: RawNodeToolArgs = {
  'subnet-file': '/run/flannel/subnet.env',
  'data-dir': '/var/lib/cni/networks',
  network: 'cbr0',
  bridge: 'cni0',
  'etcd-prefix': '/coreos.com/network',
  'kube-subnet-mgr': false,
  'kube-annotation-prefix': 'flannel.alpha.coreos.com',
  'net-config-path': '/etc/kube-flannel/net-conf.json',
  timeout: 3,
  json: false,
};
