// The reference CNI plugins (Debian's containernetworking-plugins, in
// /usr/lib/cni) that tests compare against or chain with. TSF_CNI_REF_DIR
// points every suite at another install, as TSF_ETCD_BIN does for etcd
// (test/helpers/etcd.ts).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const CNI_REF_DIR = process.env.TSF_CNI_REF_DIR ?? '/usr/lib/cni';

export function refPlugin(name: string): string {
  return join(CNI_REF_DIR, name);
}

export function haveRefPlugins(...names: string[]): boolean {
  return names.every((n) => existsSync(refPlugin(n)));
}
