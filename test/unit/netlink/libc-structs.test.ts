// The libc structs ffi.ts lays out by hand, for every architecture Node
// runs on: what fstatfs(2) fills in decides whether a CNI_NETNS path is a
// network namespace (every ADD asks), so its f_type must be read where that
// architecture's C library puts it. No kernel: the buffers are built here as
// each ABI lays them out.
import { describe, expect, it } from 'vitest';
import { statfsType } from '../../../src/netlink/ffi.js';

const NSFS_MAGIC = 0x6e736673;
const BSIZE = 4096;

/** struct statfs's first two fields, f_type and f_bsize, each `bits` wide, in the given byte order. */
function statfsBuffer(bits: 32 | 64, le: boolean): Buffer {
  const b = Buffer.alloc(256);
  if (bits === 64) {
    if (le) {
      b.writeBigInt64LE(BigInt(NSFS_MAGIC), 0);
      b.writeBigInt64LE(BigInt(BSIZE), 8);
    } else {
      b.writeBigInt64BE(BigInt(NSFS_MAGIC), 0);
      b.writeBigInt64BE(BigInt(BSIZE), 8);
    }
  } else if (le) {
    b.writeUInt32LE(NSFS_MAGIC, 0);
    b.writeUInt32LE(BSIZE, 4);
  } else {
    b.writeUInt32BE(NSFS_MAGIC, 0);
    b.writeUInt32BE(BSIZE, 4);
  }
  return b;
}

describe('struct statfs f_type', () => {
  it('is read where each architecture puts it: a long on 64-bit Linux, an unsigned int on s390x and on 32-bit', () => {
    const cases: [NodeJS.Architecture, 32 | 64, boolean][] = [
      ['x64', 64, true],
      ['arm64', 64, true],
      ['ppc64', 64, true], // ppc64le
      ['riscv64', 64, true],
      ['loong64', 64, true],
      ['s390x', 32, false], // glibc: unsigned int f_type, big-endian
      ['arm', 32, true],
      ['ia32', 32, true],
      ['mipsel', 32, true],
      ['mips', 32, false],
      ['ppc', 32, false],
    ];
    for (const [arch, bits, le] of cases) {
      expect({ arch, type: statfsType(statfsBuffer(bits, le), arch, le) }).toEqual({ arch, type: NSFS_MAGIC });
    }
    // a 64-bit big-endian long (ppc64 big-endian): the low half is the second word
    expect(statfsType(statfsBuffer(64, false), 'ppc64', false)).toBe(NSFS_MAGIC);
  });
});
