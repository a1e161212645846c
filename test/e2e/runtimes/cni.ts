// CNI plugin and config dirs for a runtime under test: a bin dir laid out as
// `tsflannel install` lays it out (the forwarder as `tsflannel`, the
// standalone plugin beside it as `tsflannel-standalone`, here a symlink to
// bin/tsflannel; Node resolves the real path) with copies of Debian's
// portmap, loopback, bridge and host-local (copies, so the dir still works
// when bind-mounted over /usr/lib/cni), and conflists for tsflannel and for
// the reference bridge chain.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CNI_REF_DIR } from '../../helpers/reference.js';
import { installForwarder } from '../../helpers/cni-agent.js';

export const REFERENCE_DIR = CNI_REF_DIR;
const REFERENCE_PLUGINS = ['portmap', 'loopback', 'bridge', 'host-local'];

/** Creates `dir` with the plugins a runtime needs; returns it. */
export function makeBinDir(dir: string): string {
  installForwarder(dir);
  for (const p of REFERENCE_PLUGINS) copyFileSync(join(REFERENCE_DIR, p), join(dir, p));
  return dir;
}

export interface TsflannelNet {
  name: string;
  subnetFile: string;
  dataDir: string;
  /** chain portmap with capabilities.portMappings (default true) */
  portmap?: boolean;
  /** the node agent's CNI socket */
  agentSocket: string;
}

/** A conflist: tsflannel, then portmap for hostPort mappings. */
export function tsflannelConflist(net: TsflannelNet): object {
  const plugins: object[] = [{ type: 'tsflannel', subnetFile: net.subnetFile, dataDir: net.dataDir, agentSocket: net.agentSocket }];
  if (net.portmap !== false) plugins.push({ type: 'portmap', capabilities: { portMappings: true } });
  return { cniVersion: '1.0.0', name: net.name, plugins };
}

export interface BridgeNet {
  name: string;
  bridge: string;
  subnet: string;
  dataDir: string;
  mtu?: number;
}

/** The reference chain: bridge + host-local + portmap, the baseline the benchmark compares against. */
export function bridgeConflist(net: BridgeNet): object {
  return {
    cniVersion: '1.0.0',
    name: net.name,
    plugins: [
      {
        type: 'bridge', bridge: net.bridge, isGateway: true, ipMasq: false, hairpinMode: true, mtu: net.mtu ?? 1450,
        ipam: { type: 'host-local', subnet: net.subnet, dataDir: net.dataDir, routes: [{ dst: '0.0.0.0/0' }] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

/** Writes one conflist into a fresh conf dir; returns the dir. */
export function makeConfDir(dir: string, conflist: object, fileName = '10-net.conflist'): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, fileName), `${JSON.stringify(conflist, null, 2)}\n`);
  return dir;
}
