import { expect } from 'vitest';
import { CniError } from '../../src/cni/errors.js';

/** Runs `fn`, which must throw a CniError, and returns its code and message. */
export function cniErrorOf(fn: () => unknown): { code: number; msg: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return { code: (err as CniError).code, msg: (err as CniError).message };
  }
  throw new Error('expected a CniError');
}
