// Tables of benchmark figures, as aligned text for the terminal and as
// GitHub markdown. Rows are { name, ...figures }; the columns are the union
// of the rows' keys in order of first appearance, so a row may leave some
// columns empty.

/** @typedef {{ name: string, [figure: string]: unknown }} Row */

/** @param {Row[]} rows */
export function columnsOf(rows) {
  const cols = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!cols.includes(key)) cols.push(key);
  return cols;
}

/**
 * Numbers get a precision that suits their size; ratios and milliseconds
 * both read well with 2 significant decimals below 10.
 * @param {unknown} v
 */
export function formatCell(v) {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return '–';
    const abs = Math.abs(v);
    if (Number.isInteger(v)) return String(v);
    if (abs >= 100) return v.toFixed(0);
    if (abs >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  return String(v);
}

/**
 * @param {Row[]} rows
 * @returns {string}
 */
export function textTable(rows) {
  const cols = columnsOf(rows);
  const cells = [cols, ...rows.map((r) => cols.map((c) => formatCell(r[c])))];
  const widths = cols.map((_, i) => Math.max(...cells.map((line) => line[i].length)));
  const fmt = (line) =>
    line.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd();
  return [fmt(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(fmt)].join('\n');
}

/**
 * @param {Row[]} rows
 * @returns {string}
 */
export function markdownTable(rows) {
  const cols = columnsOf(rows);
  const esc = (s) => s.replace(/\|/g, '\\|');
  const line = (cells) => `| ${cells.map(esc).join(' | ')} |`;
  return [
    line(cols),
    `|${cols.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rows.map((r) => line(cols.map((c) => formatCell(r[c])))),
  ].join('\n');
}
