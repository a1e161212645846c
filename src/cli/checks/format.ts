// Terminal output helpers for status, doctor and the demo: colour only on a
// TTY (and never with NO_COLOR), and plain aligned tables.

export interface Paint {
  green(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  dim(s: string): string;
  bold(s: string): string;
}

const ANSI = (code: number) => (s: string) => `\x1b[${code}m${s}\x1b[0m`;
const PLAIN = (s: string) => s;

export function paintFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Paint {
  const on = Boolean(stream.isTTY) && env.NO_COLOR === undefined && env.TERM !== 'dumb';
  return on
    ? { green: ANSI(32), red: ANSI(31), yellow: ANSI(33), dim: ANSI(2), bold: ANSI(1) }
    : { green: PLAIN, red: PLAIN, yellow: PLAIN, dim: PLAIN, bold: PLAIN };
}

// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-9;]*m/g;

export function visibleLength(s: string): number {
  return [...s.replace(ESCAPES, '')].length;
}

/** Left-aligned columns separated by two spaces; cells may carry colour. */
export function table(header: string[], rows: string[][], indent = '  '): string[] {
  const widths = header.map((h, i) => Math.max(visibleLength(h), ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const line = (cells: string[]) =>
    indent +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(widths[i]! - visibleLength(c))))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}
