// The docs against the code: the facts that drift when code changes and the
// pages do not. Flags come from the real --help of both executables (their
// main() run in-process, so the source is what is checked, not a stale
// build); metric names from the agent's source, where every metric, hand-
// rendered or registered through prom-client, is named by a string literal;
// links and repository paths from the Markdown itself.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DOCS = join(ROOT, 'docs');
const read = (path: string): string => readFileSync(path, 'utf8');

// ---------------------------------------------------------------- --help

/** Runs an entry point's main(argv) and returns what it printed to stdout. */
async function helpOf(main: (argv: string[]) => Promise<void>, argv: string[]): Promise<string> {
  const chunks: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    chunks.push(args.map(String).join(' ') + '\n');
  });
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
    return true;
  });
  const exitCode = process.exitCode;
  try {
    await main(argv);
  } finally {
    log.mockRestore();
    write.mockRestore();
  }
  const failed = process.exitCode;
  process.exitCode = exitCode;
  expect(failed ?? 0, `${argv.join(' ')} exited ${failed}`).toBe(0);
  return chunks.join('');
}

/** Long flags as --help lists them (yargs: two spaces, then the flag, maybe after an alias). */
function flagsIn(help: string): string[] {
  const flags = new Set<string>();
  for (const line of help.split('\n')) {
    const m = /^\s{2,}(?:-[a-zA-Z], )?(--[a-z0-9][a-z0-9-]*)/.exec(line);
    if (m && m[1] !== '--help' && m[1] !== '--version') flags.add(m[1]);
  }
  return [...flags];
}

/** The `tsflannel <command>` names listed under "Commands:". */
function commandsIn(help: string): string[] {
  const section = help.split(/^Commands:$/m)[1]?.split(/^\S/m)[0] ?? '';
  return [...section.matchAll(/^\s+tsflannel ([a-z][a-z0-9-]*)/gm)].map((m) => m[1]!);
}

/** A flag counts as documented when configuration.md shows it in code, as `--flag` or `--flag=…`/`--flag value`. */
function documents(page: string, flag: string): boolean {
  return new RegExp('`' + flag + '(?![a-z0-9-])[^`]*`').test(page);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('docs/configuration.md names every flag the executables show in --help', () => {
  const page = read(join(DOCS, 'configuration.md'));

  it('every flag of `tsflanneld --help` is in configuration-agent-flags.md', async () => {
    const { main } = await import('../../src/daemon/main.js');
    const flags = flagsIn(await helpOf(main, ['--help']));
    expect(flags).toContain('--kube-subnet-mgr');
    const agentPage = read(join(DOCS, 'configuration-agent-flags.md'));
    const missing = flags.filter((f) => !documents(agentPage, f));
    expect(missing, 'tsflanneld flags missing from docs/configuration-agent-flags.md').toEqual([]);
  });

  it('every flag of every `tsflannel <command> --help` is in configuration.md', async () => {
    const { main } = await import('../../src/cli/main.js');
    const commands = commandsIn(await helpOf(main, ['--help']));
    expect(commands).toEqual(expect.arrayContaining(['install', 'status', 'doctor']));
    const missing: string[] = [];
    for (const command of commands) {
      expect(page, `docs/configuration.md has no section for tsflannel ${command}`).toContain(`tsflannel ${command}`);
      const flags = flagsIn(await helpOf(main, [command, '--help']));
      expect(flags.length, `tsflannel ${command} --help lists no flags`).toBeGreaterThan(0);
      missing.push(...flags.filter((f) => !documents(page, f)).map((f) => `tsflannel ${command} ${f}`));
    }
    expect(missing, 'tsflannel flags missing from docs/configuration.md').toEqual([]);
  });
});

// ---------------------------------------------------------------- metrics

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/**
 * Every metric the agent can serve: a `tsflannel_…` string literal in
 * src/daemon (the hand-written exposition names them so, and prom-client's
 * `name: '…'` does too).
 */
function metricNamesInSource(): Map<string, string> {
  const names = new Map<string, string>();
  for (const file of tsFiles(join(ROOT, 'src/daemon'))) {
    for (const m of read(file).matchAll(/['"`](tsflannel_[a-z0-9_]+)['"`]/g)) {
      if (!names.has(m[1]!)) names.set(m[1]!, relative(ROOT, file));
    }
  }
  return names;
}

describe('docs/observability.md and the metrics the agent serves', () => {
  const page = read(join(DOCS, 'observability.md'));
  const served = metricNamesInSource();

  it('finds the metric names in src/daemon (the scan itself works)', () => {
    expect([...served.keys()]).toEqual(expect.arrayContaining(['tsflannel_ready', 'tsflannel_reconciles_total']));
  });

  it('every metric named in src/daemon is documented in observability.md', () => {
    const missing = [...served].filter(([name]) => !new RegExp('`' + name + '`').test(page)).map(([n, f]) => `${n} (${f})`);
    expect(missing, 'metrics missing from docs/observability.md').toEqual([]);
  });

  it('every metric observability.md names exists in src/daemon (histogram suffixes allowed)', () => {
    const documented = new Set([...page.matchAll(/\b(tsflannel_[a-z0-9_]+)\b/g)].map((m) => m[1]!));
    const unknown = [...documented].filter((name) => {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      return !served.has(name) && !served.has(base);
    });
    expect(unknown, 'metrics in docs/observability.md that the agent does not define').toEqual([]);
  });
});

// ---------------------------------------------------------------- links

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const text = m[1]!
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(text) ?? 0;
    seen.set(text, n + 1);
    anchors.add(n === 0 ? text : `${text}-${n}`);
  }
  return anchors;
}

/** Link targets outside code: inline links and reference definitions. */
function linksOf(markdown: string): string[] {
  const targets: string[] = [];
  let fenced = false;
  for (const raw of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(raw)) {
      fenced = !fenced;
      continue;
    }
    if (fenced) continue;
    const line = raw.replace(/`[^`]*`/g, '');
    for (const m of line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) targets.push(m[1]!);
    const def = /^\s*\[[^\]]+\]:\s+(\S+)/.exec(line);
    if (def) targets.push(def[1]!);
  }
  return targets;
}

const PAGES = [join(ROOT, 'README.md'), ...readdirSync(DOCS).filter((f) => f.endsWith('.md')).map((f) => join(DOCS, f))];

describe('links in README.md and docs/*.md resolve', () => {
  it('docs/ holds the pages README.md promises', () => {
    for (const page of ['install-kind', 'install-kubeadm', 'configuration', 'troubleshooting', 'observability', 'architecture', 'reliability', 'benchmarks', 'development', 'runtimes', 'README']) {
      expect(existsSync(join(DOCS, `${page}.md`)), `docs/${page}.md`).toBe(true);
    }
  });

  it.each(PAGES.map((p) => [relative(ROOT, p), p]))('every relative link and anchor in %s resolves', (_name, page) => {
    const broken: string[] = [];
    for (const target of linksOf(read(page))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
      const [path, anchor] = target.split('#', 2) as [string, string | undefined];
      const file = path === '' ? page : resolve(dirname(page), decodeURIComponent(path));
      if (!existsSync(file)) {
        broken.push(`${target}: no such file`);
        continue;
      }
      if (anchor !== undefined && statSync(file).isFile() && file.endsWith('.md') && !anchorsOf(read(file)).has(anchor)) {
        broken.push(`${target}: no heading with anchor #${anchor} in ${relative(ROOT, file)}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it.each(PAGES.map((p) => [relative(ROOT, p), p]))('every repository path %s names (src/, test/, bench/, ...) exists', (_name, page) => {
    const text = read(page);
    const missing: string[] = [];
    const pathRe = /(?<![\w/.-])((?:src|test|bench|scripts|conf|native\/tsfnl|docs|bin)\/[A-Za-z0-9_./-]*[A-Za-z0-9_/])(?![*<])/g;
    for (const m of text.matchAll(pathRe)) {
      if (!existsSync(join(ROOT, m[1]!))) missing.push(m[1]!);
    }
    expect([...new Set(missing)], 'paths that moved or never existed').toEqual([]);
  });

  it('the docs pages that conf/ files point at exist', () => {
    const pointers: string[] = [];
    for (const file of readdirSync(join(ROOT, 'conf'), { recursive: true, encoding: 'utf8' })) {
      if (!statSync(join(ROOT, 'conf', file)).isFile()) continue;
      for (const m of read(join(ROOT, 'conf', file)).matchAll(/\b(docs\/[A-Za-z0-9_.\/-]+\.md)\b/g)) pointers.push(`${file}: ${m[1]}`);
    }
    expect(pointers).toContain('kind-config.yaml: docs/install-kind.md');
    const missing = pointers.filter((p) => !existsSync(join(ROOT, p.split(': ')[1]!)));
    expect(missing).toEqual([]);
  });
});
