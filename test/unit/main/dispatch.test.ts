// The single executable serves the node tool, the standalone CNI plugin and
// the agent: which one runs depends on a first argument, argv[0]'s basename
// and the CNI environment (src/main/dispatch.ts).
import { describe, expect, it } from 'vitest';
import { programFor, STANDALONE_NAME } from '../../../src/main/dispatch.js';
import { STANDALONE_NAME as INSTALLED_STANDALONE } from '../../../src/cli/install.js';

const argv = (...args: string[]) => ['/usr/local/bin/tsflannel', '/usr/local/bin/tsflannel', ...args];

describe('programFor', () => {
  it('runs the agent under the name tsflanneld (a link in the image, a hard link in dist/)', () => {
    expect(programFor('/usr/local/bin/tsflanneld', argv('--kube-subnet-mgr'), {})).toEqual({ name: 'tsflanneld', kind: 'agent', consumedArg: false });
    expect(programFor('tsflanneld', argv(), { CNI_COMMAND: 'ADD' }).kind).toBe('agent');
  });

  it('takes a first argument naming a program and drops it', () => {
    expect(programFor('/usr/local/bin/tsflannel', argv('tsflanneld', '--help'), {})).toEqual({ name: 'tsflanneld', kind: 'agent', consumedArg: true });
    expect(programFor('/x/whatever', argv('tsflannel', 'status'), {})).toEqual({ name: 'tsflannel', kind: 'tool', consumedArg: true });
    // a runtime-style call after the program argument is the plugin
    expect(programFor('/x/whatever', argv('tsflannel-standalone'), { CNI_NETNS: '/run/netns/x' }).kind).toBe('plugin');
  });

  it('is the CNI plugin as tsflannel or tsflannel-standalone when CNI_COMMAND is set, even to empty', () => {
    expect(programFor('/opt/cni/bin/tsflannel-standalone', argv(), { CNI_COMMAND: 'ADD' })).toEqual({ name: 'tsflannel-standalone', kind: 'plugin', consumedArg: false });
    expect(programFor('/usr/local/bin/tsflannel', argv(), { CNI_COMMAND: '' }).kind).toBe('plugin');
    expect(programFor('/usr/local/bin/tsflannel', argv('status'), { CNI_COMMAND: 'VERSION' }).kind).toBe('plugin');
  });

  it('is the plugin for a runtime-style call without CNI_COMMAND, the tool when there are arguments', () => {
    expect(programFor('/opt/cni/bin/tsflannel-standalone', argv(), { CNI_CONTAINERID: 'c1' }).kind).toBe('plugin');
    expect(programFor('/usr/local/bin/tsflannel', argv('doctor'), { CNI_CONTAINERID: 'c1' }).kind).toBe('tool');
    expect(programFor('/usr/local/bin/tsflannel', argv(), {}).kind).toBe('tool');
  });

  it('treats an unknown name (a renamed copy) as tsflannel', () => {
    expect(programFor('/tmp/my-copy', argv('status'), {})).toEqual({ name: 'tsflannel', kind: 'tool', consumedArg: false });
  });

  it('knows the standalone under the name tsflannel install gives it', () => {
    expect(STANDALONE_NAME).toBe(INSTALLED_STANDALONE);
  });
});
