// conf/kube-tsflannel.yml against the code it deploys: the conflist is what
// `tsflannel install` writes, RBAC is exactly the agent's API calls, the
// agent's flags parse with its own option parser, and every path the
// containers use is mounted. YAML is read with @kubernetes/client-node's
// loadAllYaml (js-yaml + the client's typed models), the parser the agent
// itself links.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { dumpYaml, loadAllYaml, type V1ClusterRole, type V1ConfigMap, type V1Container, type V1DaemonSet } from '@kubernetes/client-node';
import { KUBE_API_CALLS } from '../../src/daemon/subnet/kube.js';
import { envName, FLAGS, parseAgentOptions } from '../../src/daemon/options.js';
import { parseNetworkConfig } from '../../src/daemon/config.js';
import { CONFLIST_NAME, checkConflist, install } from '../../src/cli/install.js';
import { DEFAULT_SUBNET_FILE } from '../../src/flannel/subnet-env.js';

const repo = (p: string) => new URL(`../../${p}`, import.meta.url);
const manifestText = readFileSync(repo('conf/kube-tsflannel.yml'), 'utf8');

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string };
}

const docs = loadAllYaml(manifestText) as KubeObject[];
const one = <T>(kind: string): T => {
  const found = docs.filter((d) => d.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0] as T;
};

/** Objects of an unknown apiVersion come back untyped: a plain YAML parse. */
const untyped = (text: string): unknown[] => loadAllYaml(text.replace(/^apiVersion: /gm, 'apiVersion: untyped.invalid/'));

describe('conf/kube-tsflannel.yml', () => {
  const ds = one<V1DaemonSet>('DaemonSet');
  const pod = ds.spec!.template.spec!;
  const cm = one<V1ConfigMap>('ConfigMap');
  const init = pod.initContainers!.find((c) => c.name === 'install-cni')!;
  const agent = pod.containers.find((c) => c.name === 'kube-tsflannel')!;

  /** The host path behind a path inside a container, or the ConfigMap key. */
  const source = (c: V1Container, path: string): { hostPath?: string; configMapKey?: string } | undefined => {
    for (const m of c.volumeMounts ?? []) {
      const mount = m.mountPath.replace(/\/$/, '');
      if (path !== mount && !path.startsWith(`${mount}/`)) continue;
      const rest = path.slice(mount.length).replace(/^\//, '');
      const vol = pod.volumes!.find((v) => v.name === m.name)!;
      if (vol.hostPath) return { hostPath: rest ? `${vol.hostPath.path}/${rest}` : vol.hostPath.path };
      if (vol.configMap) return { configMapKey: rest };
    }
    return undefined;
  };

  it('holds the six objects, all in one namespace and wired to each other', () => {
    expect(docs.map((d) => d.kind)).toEqual(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet']);
    const ns = one<KubeObject>('Namespace').metadata!.name;
    const sa = one<KubeObject>('ServiceAccount').metadata!;
    expect(sa.namespace).toBe(ns);
    expect(cm.metadata!.namespace).toBe(ns);
    expect(ds.metadata!.namespace).toBe(ns);
    const binding = one<{ roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] }>('ClusterRoleBinding');
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: one<KubeObject>('ClusterRole').metadata!.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.name, namespace: ns }]);
    expect(pod.serviceAccountName).toBe(sa.name);
    expect(pod.volumes!.find((v) => v.configMap)!.configMap!.name).toBe(cm.metadata!.name);
    for (const [k, v] of Object.entries(ds.spec!.selector.matchLabels!)) expect(ds.spec!.template.metadata!.labels![k]).toBe(v);
  });

  it('has no field the Kubernetes models do not know (a typo would be dropped silently by the API server)', () => {
    const roundTrip = untyped(docs.map((d) => `---\n${dumpYaml(d)}`).join(''));
    expect(isDeepStrictEqual(untyped(manifestText), roundTrip)).toBe(true);
    // The check has teeth: a misspelled field does not survive the typed round trip.
    const typo = manifestText.replace('hostNetwork: true', 'hostNetwrok: true');
    const typoTrip = untyped(loadAllYaml(typo).map((d) => `---\n${dumpYaml(d)}`).join(''));
    expect(isDeepStrictEqual(untyped(typo), typoTrip)).toBe(false);
  });

  it('grants exactly the API calls tsflanneld makes', () => {
    const role = one<V1ClusterRole>('ClusterRole');
    const granted = new Set<string>();
    for (const rule of role.rules ?? []) {
      expect(rule.apiGroups).toEqual(['']);
      expect(rule.resourceNames ?? []).toEqual([]);
      for (const resource of rule.resources ?? []) for (const verb of rule.verbs) granted.add(`${verb} ${resource}`);
    }
    const used = new Set(KUBE_API_CALLS.map((c) => `${c.verb} ${c.resource}`));
    expect([...granted].sort()).toEqual([...used].sort());
  });

  describe('the CNI config', () => {
    let dir = '';
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'tsf-manifest-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('is byte for byte the conflist `tsflannel install` writes by default and from the ConfigMap', () => {
      const fakeBinary = join(dir, 'tsflannel-src');
      writeFileSync(fakeBinary, '#!/bin/sh\n');
      const forwarder = join(dir, 'tsflannel-forward');
      writeFileSync(forwarder, '#!/bin/sh\n');
      const fromCm = join(dir, 'cni-conf.json');
      writeFileSync(fromCm, cm.data!['cni-conf.json']!);
      const viaDefault = install({ cniBinDir: join(dir, 'a/bin'), cniConfDir: join(dir, 'a/net.d'), source: fakeBinary, forwarder });
      const viaConfigMap = install({ cniBinDir: join(dir, 'b/bin'), cniConfDir: join(dir, 'b/net.d'), source: fakeBinary, forwarder, conflist: fromCm });
      const written = readFileSync(viaDefault.conflist.path);
      expect(written.equals(readFileSync(viaConfigMap.conflist.path))).toBe(true);
      expect(written.equals(Buffer.from(cm.data!['cni-conf.json']!, 'utf8'))).toBe(true);
      expect(written.equals(readFileSync(repo('conf/10-tsflannel.conflist')))).toBe(true);
      expect(() => checkConflist(cm.data!['cni-conf.json']!, 'ConfigMap')).not.toThrow();
    });

    it('reaches the init container through the ConfigMap mount, and lands in the node dirs', () => {
      const cmd = [...(init.command ?? []), ...(init.args ?? [])];
      expect(cmd.slice(0, 2)).toEqual(['/usr/local/bin/tsflannel', 'install']);
      const flag = (name: string) => cmd[cmd.indexOf(name) + 1]!;
      expect(flag('--cni-bin-dir')).toBe('/host/opt/cni/bin');
      expect(flag('--cni-conf-dir')).toBe('/host/etc/cni/net.d');
      expect(source(init, flag('--cni-bin-dir'))).toEqual({ hostPath: '/opt/cni/bin' });
      expect(source(init, flag('--cni-conf-dir'))).toEqual({ hostPath: '/etc/cni/net.d' });
      expect(source(init, flag('--conflist'))).toEqual({ configMapKey: 'cni-conf.json' });
      expect(init.image).toBe(agent.image);
    });
  });

  it('runs the agent with flags its own parser accepts, matching the probes and mounts', () => {
    const argv = [...(agent.command ?? []).slice(1), ...(agent.args ?? [])];
    expect(agent.command).toEqual(['/usr/local/bin/tsflanneld']);
    const opts = parseAgentOptions(argv, { NODE_NAME: 'node-a' });
    expect(opts).toMatchObject({ kubeSubnetMgr: true, ipMasq: true, healthzIP: '127.0.0.1', nodeName: 'node-a' });
    // liveness and readiness are different questions: a node waiting for its podCIDR is alive
    expect(agent.livenessProbe!.httpGet).toMatchObject({ host: '127.0.0.1', path: '/healthz', port: opts.healthzPort });
    expect(agent.readinessProbe!.httpGet).toMatchObject({ host: '127.0.0.1', path: '/readyz', port: opts.healthzPort });
    // kube-proxy serves 0.0.0.0:10256 on every node and this pod is hostNetwork.
    expect(opts.healthzPort).not.toBe(10256);
    expect(pod.hostNetwork).toBe(true);
    expect(agent.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(source(agent, opts.netConfigPath)).toEqual({ configMapKey: 'net-conf.json' });
    expect(source(agent, dirname(opts.subnetFile))).toEqual({ hostPath: dirname(DEFAULT_SUBNET_FILE) });
    expect(source(agent, '/run/xtables.lock')).toEqual({ hostPath: '/run/xtables.lock' });
    expect(pod.volumes!.find((v) => v.hostPath?.path === '/run/xtables.lock')!.hostPath!.type).toBe('FileOrCreate');
  });

  it('mounts into the agent only what it or doctor uses, each with a comment saying why; every volume is mounted', () => {
    expect(agent.volumeMounts!.map((m) => m.mountPath).sort()).toEqual(
      ['/etc/kube-flannel/', '/run/flannel', '/run/netns', '/run/tsflannel', '/run/wireguard', '/run/xtables.lock', '/var/lib/cni', '/var/run/netns'].sort(),
    );
    // The CNI bin and conf dirs are the init container's: the agent execs no
    // plugin and reads no conflist (the forwarder sends it on the socket).
    expect(source(agent, '/opt/cni/bin')).toBeUndefined();
    expect(source(agent, '/etc/cni/net.d')).toBeUndefined();
    expect(source(agent, '/lib/modules')).toBeUndefined();
    const agentText = manifestText.slice(manifestText.indexOf('      containers:\n'));
    for (const m of agent.volumeMounts!) {
      const at = agentText.indexOf(`- name: ${m.name}\n              mountPath: ${m.mountPath}\n`);
      expect(at, m.name).toBeGreaterThan(0);
      // run-netns's comment covers its other spelling, var-run-netns
      const commented = m.name === 'var-run-netns' ? 'run-netns' : m.name;
      const at2 = agentText.indexOf(`- name: ${commented}\n`);
      const lineAbove = agentText.slice(0, at2).trimEnd().split('\n').at(-1)!;
      expect(lineAbove, `a comment right above the agent's ${m.name} mount`).toMatch(/^\s*# /);
    }
    const mounted = new Set([...pod.initContainers!, ...pod.containers].flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name)));
    expect(pod.volumes!.map((v) => v.name).filter((n) => !mounted.has(n))).toEqual([]);
  });

  it('configures the agent through FLANNELD_* env: /metrics on the node IP (downward API status.hostIP, IPv4 or IPv6) at the documented port', () => {
    const env = agent.env ?? [];
    expect(env).toContainEqual({ name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } });
    const metricsAddr = env.find((e) => e.name === 'FLANNELD_METRICS_ADDR')!;
    expect(metricsAddr.value).toContain('$(HOST_IP)');
    // Kubernetes expands $(HOST_IP) only from variables defined before it
    expect(env.findIndex((e) => e.name === 'HOST_IP')).toBeLessThan(env.indexOf(metricsAddr));
    // what the agent sees after the kubelet expanded it: status.hostIP is an
    // IPv6 address on an IPv6-only node (and on a dual-stack one whose first node IP is IPv6)
    for (const hostIP of ['192.168.8.4', 'fd00:10:96::8:4']) {
      const resolved: Record<string, string> = { NODE_NAME: 'node-a', HOST_IP: hostIP };
      for (const e of env) if (e.value !== undefined) resolved[e.name] = e.value.replace(/\$\((\w+)\)/g, (_m, v: string) => resolved[v] ?? '');
      const argv = [...(agent.command ?? []).slice(1), ...(agent.args ?? [])];
      const opts = parseAgentOptions(argv, resolved);
      expect(opts.metricsAddr, hostIP).toEqual({ host: hostIP, port: 9465 });
    }
    expect(agent.ports).toContainEqual({ name: 'metrics', containerPort: 9465, protocol: 'TCP' });
    const annotations = one<V1DaemonSet>('DaemonSet').spec!.template.metadata!.annotations!;
    expect(annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9465', 'prometheus.io/path': '/metrics' });
    // every FLANNELD_* variable in the manifest names a real flag
    for (const e of env.filter((x) => x.name.startsWith('FLANNELD_'))) {
      expect(Object.keys(FLAGS).map(envName)).toContain(e.name);
    }
  });

  it('shares the CNI socket, the pod netns dirs (HostToContainer), host PIDs and the IPAM store with the host', () => {
    const opts = parseAgentOptions([...(agent.args ?? [])], { NODE_NAME: 'node-a' });
    expect(source(agent, dirname(opts.cniSocket))).toEqual({ hostPath: '/run/tsflannel' });
    expect(source(agent, '/var/lib/cni/networks')).toEqual({ hostPath: '/var/lib/cni/networks' });
    for (const dir of ['/run/netns', '/var/run/netns']) {
      expect(source(agent, `${dir}/cni-1234`)).toEqual({ hostPath: `${dir}/cni-1234` });
      expect(agent.volumeMounts!.find((m) => m.mountPath === dir)!.mountPropagation).toBe('HostToContainer');
    }
    expect(pod.hostPID).toBe(true);
    // Each of these mounts says in a comment why it exists.
    for (const name of ['tsflannel-run', 'run-netns', 'cni-ipam']) {
      const at = manifestText.indexOf(`- name: ${name}\n              mountPath`);
      expect(manifestText.slice(Math.max(0, at - 300), at), name).toMatch(/# /);
    }
  });

  it('runs the agent privileged (it enters pod netns and writes sysctls for the CNI calls it serves), and schedules it on every node first', () => {
    expect(agent.securityContext).toEqual({ privileged: true });
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.tolerations).toEqual(
      expect.arrayContaining([
        { operator: 'Exists', effect: 'NoSchedule' },
        { operator: 'Exists', effect: 'NoExecute' },
      ]),
    );
  });

  it('has a net-conf.json the agent parses to the kind cluster\'s pod subnet with VXLAN', () => {
    const net = parseNetworkConfig(cm.data!['net-conf.json']!);
    expect(net.network).toBe('10.244.0.0/16');
    expect(net.backend.type).toBe('vxlan');
    const kind = untyped(readFileSync(repo('conf/kind-config.yaml'), 'utf8'))[0] as {
      networking: { podSubnet: string; disableDefaultCNI: boolean };
      nodes: { role: string }[];
    };
    expect(kind.networking).toEqual({ disableDefaultCNI: true, podSubnet: net.network });
    expect(kind.nodes.map((n) => n.role)).toEqual(['control-plane', 'worker', 'worker']);
  });

  it('uses an image the Dockerfile builds, with the executable under both names and portmap where the manifest expects them', () => {
    const dockerfile = readFileSync(repo('Dockerfile'), 'utf8');
    // one single executable; tsflanneld is a link to it (src/main/dispatch.ts picks by name)
    expect(dockerfile).toMatch(/COPY --from=build \/src\/dist\/tsflannel \/src\/dist\/tsflannel-forward \/usr\/local\/bin\//);
    expect(dockerfile).toContain('RUN ln -s tsflannel /usr/local/bin/tsflanneld');
    expect(dockerfile).toMatch(/ENTRYPOINT \["\/usr\/local\/bin\/tsflanneld"\]/);
    const cmd = [...(init.command ?? []), ...(init.args ?? [])];
    const plugin = cmd[cmd.indexOf('--with-plugin') + 1]!;
    expect(dockerfile).toContain(`COPY --from=build ${plugin} ${plugin}`);
    expect(CONFLIST_NAME).toBe('10-tsflannel.conflist');
    expect(agent.imagePullPolicy).toBe('IfNotPresent');
  });

  it('describes the iptables wrapper and portmap in the Dockerfile as they work: the hint chains the wrapper reads, its lock, the replacement of an old portmap', () => {
    const dockerfile = readFileSync(repo('Dockerfile'), 'utf8');
    const wrapper = readFileSync(repo('conf/image/iptables-wrapper'), 'utf8');
    const comments = dockerfile.split('\n').filter((l) => l.startsWith('#')).join(' ').replace(/#\s*/g, '');
    const chains = /\^:\(([A-Z|-]+)\) /.exec(wrapper)?.[1]?.split('|');
    expect(chains).toEqual(['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY']);
    for (const chain of chains!) expect(comments).toContain(chain);
    expect(wrapper).toMatch(/^flock /m);
    expect(comments).toMatch(/flock/);
    // not only "on nodes that have none": one that cannot speak the conflist's cniVersion is replaced too
    expect(comments).toMatch(/portmap[^.]*replaces a node's own that cannot speak\s+the conflist's cniVersion/);
  });

  it('has a Dockerfile the classic builder takes too (DOCKER_BUILDKIT=0, older Docker): no BuildKit-only flags or syntax', () => {
    const dockerfile = readFileSync(repo('Dockerfile'), 'utf8');
    const instructions = dockerfile.split('\n').filter((l) => /^[A-Z]+\s/.test(l));
    for (const line of instructions) {
      // COPY/ADD --chmod, --link; RUN --mount/--network/--security; heredocs
      expect(line, line).not.toMatch(/^(COPY|ADD)\s.*--(chmod|link|parents|exclude)\b|^RUN\s+--|<<-?\s*['"]?\w+/);
    }
    expect(dockerfile).not.toMatch(/^# syntax=/m);
  });
});
