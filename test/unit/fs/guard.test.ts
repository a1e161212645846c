// Path guards: nothing from a config may block the plugin in open() or lead
// into a kernel file system.
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { constants as fsc, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDirSync, kernelFsOf, openRegularSync, PathGuardError } from '../../../src/fs/guard.js';

const dir = mkdtempSync(join(tmpdir(), 'tsf-guard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function guardError(fn: () => unknown): PathGuardError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PathGuardError);
    return err as PathGuardError;
  }
  throw new Error('expected a PathGuardError');
}

describe('path guards', () => {
  it('finds /proc and /sys by name and through a symlink', () => {
    expect(kernelFsOf('/proc/1/x')).toBe('proc');
    expect(kernelFsOf('/sys/x/y')).toBe('sysfs');
    const link = join(dir, 'p');
    symlinkSync('/proc/self', link);
    expect(kernelFsOf(join(link, 'missing/deeper'))).toBe('proc');
    expect(kernelFsOf(join(dir, 'a/b'))).toBeUndefined();
  });

  it('ensureDirSync creates levels one by one, refuses a kernel fs and a file in the way', () => {
    ensureDirSync(join(dir, 'x/y/z'));
    ensureDirSync(join(dir, 'x/y/z'));
    expect(guardError(() => ensureDirSync('/proc/tsf-guard/x')).reason).toBe('kernel-fs');
    writeFileSync(join(dir, 'file'), '');
    expect(guardError(() => ensureDirSync(join(dir, 'file/sub'))).reason).toBe('not-directory');
  });

  it('opens a FIFO, a directory or a device as "not regular" at once, for reading and for writing', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    mkdirSync(join(dir, 'd'));
    for (const p of [fifo, join(dir, 'd'), '/dev/null']) {
      expect(guardError(() => openRegularSync(p, fsc.O_RDONLY)).reason).toBe('not-regular');
      expect(guardError(() => openRegularSync(p, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT)).reason).toBe('not-regular');
    }
  });
});
