import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { sha256Hex } from '../../src/digest.js';

const nodeSha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

describe('sha256Hex', () => {
  it('answers a repeated text from its memo with the same digest, and a different text afresh', () => {
    const a = sha256Hex('ctr\neth0');
    expect(sha256Hex('ctr\neth0')).toBe(a);
    expect(sha256Hex('ctr\neth1')).toBe(nodeSha256('ctr\neth1'));
    expect(sha256Hex('ctr\neth0')).toBe(nodeSha256('ctr\neth0'));
  });

  it('gives the FIPS 180-4 example digests', () => {
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  });

  it('matches node:crypto for every length across the padding boundaries and for non-ASCII text', () => {
    for (let len = 0; len <= 300; len++) {
      const text = randomBytes(len).toString('base64').slice(0, len);
      expect(sha256Hex(text)).toBe(nodeSha256(text));
    }
    for (const text of ['ünïcödé\nétha0', '容器\neth0', '\u{1F600}'.repeat(40), 'x'.repeat(1024) + '\neth0']) {
      expect(sha256Hex(text)).toBe(nodeSha256(text));
    }
  });
});
