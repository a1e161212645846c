// The imports of src/ run one way: entry points on top, protocol and kernel
// access at the bottom. Each top-level folder has a rank; a module may import
// its own folder and folders of a lower rank only.
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** Higher imports lower, never the other way round. */
const RANK: Record<string, number> = {
  main: 9, // the executables' entry points
  demo: 8, // the local cluster (npm run demo, and the e2e tests' harness)
  cli: 7, // tsflannel status / doctor / install
  node: 6, // read-only views of a node's state for the cli
  daemon: 5, // tsflanneld: subnet managers, backends, traffic managers, CNI socket server
  plugin: 4, // the one CNI handler and its standalone transport
  ipam: 3,
  cni: 2, // the CNI protocol
  flannel: 2, // subnet.env
  netlink: 1, // the only place that knows FFI
  fs: 1,
  net: 1,
  sea: 0, // the single executable's asset loader
  'version.ts': 0,
  'digest.ts': 0, // SHA-256 of short text for names (plugin, IPAM, sea), node:crypto on demand
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

function topOf(file: string): string {
  return relative(SRC, file).split(sep)[0]!;
}

describe('src/ layering', () => {
  it('every top-level folder of src/ has a rank', () => {
    const tops = new Set(tsFiles(SRC).map(topOf));
    expect([...tops].filter((t) => RANK[t] === undefined)).toEqual([]);
  });

  it('no module imports a folder ranked above its own', () => {
    const upward: string[] = [];
    for (const file of tsFiles(SRC)) {
      const from = topOf(file);
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
        const target = resolve(dirname(file), m[1]!);
        if (!target.startsWith(SRC)) continue;
        const to = topOf(target.replace(/\.js$/, '.ts'));
        if (RANK[to]! > RANK[from]!) upward.push(`${relative(SRC, file)} -> ${m[1]}`);
      }
    }
    expect(upward).toEqual([]);
  });
});
