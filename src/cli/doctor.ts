// `tsflannel doctor`: runs every check against this node (or the node
// namespace given with --netns) and prints PASS / WARN / FAIL / SKIP with a
// one-line fix. Exit status 1 when any check fails.
import type { Argv } from 'yargs';
import { CHECK_IDS, evaluate, gatherInputs, type CheckResult, type CheckStatus } from './checks/index.js';
import { nodeToolCommand, type NodeToolOptions } from './checks/options.js';
import type { Paint } from './checks/format.js';
import type { ClusterView } from './checks/source.js';

export interface DoctorReport {
  ok: boolean;
  summary: Record<CheckStatus, number>;
  netns: string | null;
  source: { kind: ClusterView['source']; origin: string; error?: string };
  checks: CheckResult[];
}

export function summarize(checks: CheckResult[]): Record<CheckStatus, number> {
  const summary: Record<CheckStatus, number> = { pass: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  return summary;
}

export async function runDoctor(opts: NodeToolOptions): Promise<DoctorReport> {
  const inputs = await gatherInputs(opts);
  const checks = evaluate(inputs);
  const summary = summarize(checks);
  const source: DoctorReport['source'] = { kind: inputs.view.source, origin: inputs.view.origin };
  if (inputs.view.error) source.error = inputs.view.error;
  return { ok: summary.fail === 0, summary, netns: opts.netns ?? null, source, checks };
}

const LABEL: Record<CheckStatus, (p: Paint) => string> = {
  pass: (p) => p.green('PASS'),
  warn: (p) => p.yellow('WARN'),
  fail: (p) => p.red('FAIL'),
  skip: (p) => p.dim('SKIP'),
};

export function formatDoctor(report: DoctorReport, paint: Paint): string {
  const idWidth = Math.max(...CHECK_IDS.map((id) => id.length));
  const pad = ' '.repeat(6 + idWidth + 2);
  const where = report.netns ? `netns ${report.netns}` : 'this network namespace';
  const lines = [paint.bold(`tsflannel doctor: ${where}; leases: ${report.source.origin}`), ''];
  for (const c of report.checks) {
    lines.push(`${LABEL[c.status](paint)}  ${c.id.padEnd(idWidth)}  ${c.message}`);
    if (c.fix && c.status !== 'pass') lines.push(`${pad}${paint.bold('fix:')} ${c.fix}`);
    if (c.status !== 'pass') for (const d of c.details ?? []) lines.push(`${pad}- ${d}`);
  }
  const s = report.summary;
  lines.push('');
  const parts = [`${s.pass} passed`, `${s.warn} warning${s.warn === 1 ? '' : 's'}`, `${s.fail} failed`, `${s.skip} skipped`];
  lines.push(s.fail > 0 ? paint.red(parts.join(', ')) : s.warn > 0 ? paint.yellow(parts.join(', ')) : paint.green(parts.join(', ')));
  return lines.join('\n') + '\n';
}

export function doctorCommand(cli: Argv): Argv {
  return nodeToolCommand(cli, {
    name: 'doctor',
    describe: 'check this node for the usual flannel problems; each finding with a one-line fix (exit 1 on FAIL)',
    run: runDoctor,
    format: formatDoctor,
    failed: (report) => !report.ok,
  });
}
