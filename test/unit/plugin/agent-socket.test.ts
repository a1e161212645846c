// The conflist key agentSocket (read by the forwarder too) and the socket
// protocol's frame codec: pure logic, no kernel.
import { describe, expect, it } from 'vitest';
import { netConfFromObject } from '../../../src/cni/config.js';
import { CniError } from '../../../src/cni/errors.js';
import { parsePluginConfig } from '../../../src/plugin/config.js';
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse, FrameError, FrameReader, MAX_FRAME } from '../../../src/daemon/cni-frame.js';
import { handleCni } from '../../../src/plugin/handler.js';
import { checkCniSocket, cniPathLine, readCniSocket } from '../../../src/cli/checks/cni-socket.js';

const conf = (extra: Record<string, unknown>) =>
  parsePluginConfig(netConfFromObject({ cniVersion: '1.0.0', name: 'n', type: 'tsflannel', ...extra }, 'ADD'));

describe('agentSocket in the plugin config', () => {
  it('is absent by default, and kept as given when "" or an absolute path', () => {
    expect(conf({}).agentSocket).toBeUndefined();
    expect(conf({ agentSocket: '' }).agentSocket).toBe('');
    expect(conf({ agentSocket: '/run/x/cni.sock' }).agentSocket).toBe('/run/x/cni.sock');
  });
  it.each([['relative/cni.sock'], [`/${'a'.repeat(107)}`], ['/run/a\u0000b'], [42]])('refuses %j with code 7', (value) => {
    expect(() => conf({ agentSocket: value })).toThrow(CniError);
    try {
      conf({ agentSocket: value });
    } catch (err) {
      expect((err as CniError).code).toBe(7);
    }
  });
});

describe('CNI socket frames', () => {
  it('round-trips a request and an answer', () => {
    const req = encodeRequest({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c' }, Buffer.from('{"a":1}'));
    const body = new FrameReader().push(req);
    expect(decodeRequest(body!)).toEqual({ env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c' }, stdin: Buffer.from('{"a":1}') });
    const ans = encodeResponse({ stdout: Buffer.from('{}\n'), exitCode: 1, stderr: 'x' });
    expect(decodeResponse(ans.subarray(4))).toEqual({ stdout: Buffer.from('{}\n'), exitCode: 1, stderr: 'x' });
  });
  it('assembles a frame split at any byte', () => {
    const req = encodeRequest({ CNI_COMMAND: 'DEL' }, Buffer.from('xyz'));
    for (let cut = 1; cut < req.length; cut++) {
      const r = new FrameReader();
      expect(r.push(req.subarray(0, cut))).toBeUndefined();
      expect(r.push(req.subarray(cut))).toEqual(req.subarray(4));
    }
  });
  it('refuses an oversize length before buffering the body', () => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_FRAME + 1);
    expect(() => new FrameReader().push(head)).toThrow(FrameError);
  });
  it.each([
    ['not JSON', 'nope'],
    ['wrong version', JSON.stringify({ v: 2, env: {}, stdin: '' })],
    ['a foreign variable', JSON.stringify({ v: 1, env: { PATH: '/bin' }, stdin: '' })],
    ['a non-string value', JSON.stringify({ v: 1, env: { CNI_COMMAND: 1 }, stdin: '' })],
    ['stdin not base64', JSON.stringify({ v: 1, env: {}, stdin: '***' })],
  ])('refuses a request with %s', (_what, body) => {
    expect(() => decodeRequest(Buffer.from(body))).toThrow(FrameError);
  });
});

describe('handleCni', () => {
  it('answers VERSION as bytes with exit code 0 and no stderr', async () => {
    const res = await handleCni({ env: { CNI_COMMAND: 'VERSION' }, stdin: Buffer.from('{"cniVersion":"0.4.0"}') });
    expect(res.exitCode).toBe(0);
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout.toString())).toMatchObject({ cniVersion: '0.4.0' });
  });
  it('reports a missing CNI_COMMAND as CNI error 4 on stdout and a line on stderr', async () => {
    const res = await handleCni({ env: {}, stdin: Buffer.alloc(0) });
    expect(res.exitCode).toBe(1);
    expect(JSON.parse(res.stdout.toString())).toMatchObject({ code: 4 });
    expect(res.stderr).toMatch(/^tsflannel: CNI error 4/);
  });
  it('refuses stdin over 1 MiB with code 6, as the standalone does', async () => {
    const res = await handleCni({ env: { CNI_COMMAND: 'ADD' }, stdin: Buffer.alloc((1 << 20) + 1) });
    expect(JSON.parse(res.stdout.toString())).toMatchObject({ code: 6 });
  });
});

describe('doctor check cni-socket (pure)', () => {
  const base = { path: '/run/tsflannel/cni.sock', answering: false, fallbacks: { count: 0 } };
  it('warns when there is no socket, naming the standalone fallback and the fix', () => {
    const r = checkCniSocket({ ...base, kind: 'missing' })!;
    expect(r).toMatchObject({ id: 'cni-socket', status: 'warn' });
    expect(r.message).toContain('standalone');
    expect(r.fix).toContain('agentSocket');
  });
  it('fails on a socket open to others or not owned by root', () => {
    expect(checkCniSocket({ ...base, kind: 'socket', mode: 0o666, uid: 0 })!.status).toBe('fail');
    expect(checkCniSocket({ ...base, kind: 'socket', mode: 0o600, uid: 1000 })!.status).toBe('fail');
    expect(checkCniSocket({ ...base, kind: 'other', mode: 0o644, uid: 0 })!.status).toBe('fail');
  });
  it('warns on a stale socket nobody answers, passes on an answering one with its call count', () => {
    expect(checkCniSocket({ ...base, kind: 'socket', mode: 0o600, uid: 0, error: 'ECONNREFUSED' })!.status).toBe('warn');
    const stats = { pid: 1, socket: base.path, startedAt: '', updatedAt: '', calls: { ADD: { ok: 3, error: 1 }, DEL: { ok: 2, error: 0 } }, refused: 0, badFrames: 0, timeouts: 0 };
    const ok = checkCniSocket({ ...base, kind: 'socket', mode: 0o600, uid: 0, answering: true, stats })!;
    expect(ok.status).toBe('pass');
    expect(ok.message).toContain('6 calls served, 1 failed');
    expect(cniPathLine({ ...base, kind: 'socket', answering: true, stats })).toBe(
      `agent at ${base.path} (answering; 6 calls served: ADD 4, DEL 2, 1 failed; no fallbacks logged)`,
    );
    const fellBack = cniPathLine({
      ...base, kind: 'missing', error: 'no socket file',
      fallbacks: { count: 3, last: { time: '2026-11-29T12:00:00Z', command: 'ADD', reason: 'connect: no such file or directory' } },
    });
    expect(fellBack).toContain('standalone plugin');
    expect(fellBack).toContain('3 fallback(s) to the standalone logged, last 2026-11-29T12:00:00Z ADD: connect: no such file or directory');
  });
  it('--cni-socket \'\' (the agent\'s "socket off", the conflist\'s agentSocket "") means standalone on purpose: skipped, no restart advice, no file read', async () => {
    const off = await readCniSocket('');
    expect(off).toMatchObject({ path: '', kind: 'off', answering: false, fallbacks: { count: 0 } });
    const r = checkCniSocket(off)!;
    expect(r.status).toBe('skip');
    expect(r.message).toContain('standalone plugin on purpose');
    expect(cniPathLine(off)).toBe('standalone plugin on purpose (--cni-socket \'\': no agent socket, as with the conflist\'s "agentSocket": "")');
  });
  it('is not evaluated when the socket was not looked at', () => {
    expect(checkCniSocket(undefined)).toBeUndefined();
  });
});
