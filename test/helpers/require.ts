// What a system test needs (root, a tool, a service) and what happens when it
// is missing. On a developer's machine a missing requirement skips the suite
// and says why on stderr; under CI (CI=true) it is an error instead, so a run
// in which a missing package turned suites into silent skips cannot pass.
/** Requirement label -> whether it is met, e.g. { root: isRoot, 'etcd (/usr/bin/etcd)': haveEtcd }. */
export type Needs = Record<string, boolean>;

/** True when skips are forbidden: CI set to anything but '', '0' or 'false'. */
export function strictMode(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = (env.CI ?? '').trim().toLowerCase();
  return ci !== '' && ci !== '0' && ci !== 'false';
}

export class MissingRequirementError extends Error {
  constructor(what: string, why: string) {
    super(`${what} cannot run: ${why}. CI=true forbids skipping a system test; scripts/setup.sh installs what tests need`);
    this.name = 'MissingRequirementError';
  }
}

/**
 * For `describe.skipIf(requireOrSkip('suite name', { root: isRoot }))`: true
 * (skip) when a requirement is unmet, after printing which; under CI it throws,
 * which fails the test file at collection.
 */
export function requireOrSkip(what: string, needs: Needs, env: NodeJS.ProcessEnv = process.env): boolean {
  const missing = Object.entries(needs)
    .filter(([, met]) => !met)
    .map(([label]) => label);
  if (missing.length === 0) return false;
  const why = `missing ${missing.join(', ')}`;
  if (strictMode(env)) throw new MissingRequirementError(what, why);
  process.stderr.write(`[skip] ${what}: ${why}\n`);
  return true;
}

/**
 * For a requirement only known while a test runs (a build that failed in
 * beforeAll): skip that test, or under CI fail it.
 */
export function skipOrFail(skip: (note?: string) => void, what: string, why: string, env: NodeJS.ProcessEnv = process.env): void {
  if (strictMode(env)) throw new MissingRequirementError(what, why);
  skip(why);
}
