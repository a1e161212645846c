// What a kubelet does with a pod spec, for podman: read the manifest's
// DaemonSet pod template generically (every init container, container and
// volume, whatever the manifest lists), and turn each container into `podman
// run` arguments adding only what a kubelet adds: the service-account token
// and CA volume, KUBERNETES_SERVICE_HOST/PORT, downward-API values, hostPath
// dirs (here under a per-node root in the test's temp dir) and ConfigMap
// volumes as files. Anything the manifest uses that is not emulated here
// throws, so a manifest change cannot silently run differently.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; [other: string]: unknown };
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  mountPropagation?: 'None' | 'HostToContainer' | 'Bidirectional';
  subPath?: string;
}

export interface HttpProbe {
  httpGet?: { host?: string; path?: string; port: number | string; scheme?: string };
  [other: string]: unknown;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: VolumeMount[];
  securityContext?: { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
  livenessProbe?: HttpProbe;
  readinessProbe?: HttpProbe;
  ports?: { containerPort: number; name?: string }[];
}

export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string; items?: { key: string; path: string }[] };
  emptyDir?: object;
  [other: string]: unknown;
}

export interface PodSpec {
  hostNetwork?: boolean;
  /** the node's PID namespace: the agent opens /proc/<pid>/ns/net paths a runtime passes */
  hostPID?: boolean;
  serviceAccountName?: string;
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
}

interface KubeObject {
  kind: string;
  metadata: { name: string; namespace?: string };
  data?: Record<string, string>;
  spec?: { template?: { spec: PodSpec } };
}

export interface Manifest {
  objects: KubeObject[];
  daemonSet: KubeObject & { spec: { template: { spec: PodSpec } } };
  podSpec: PodSpec;
  namespace: string;
}

export function readManifest(path: string): Manifest {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  const objects: KubeObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${path}: ${doc.errors[0].message}`);
    const obj = doc.toJS() as KubeObject | null;
    if (obj) objects.push(obj);
  }
  const daemonSets = objects.filter((o) => o.kind === 'DaemonSet');
  if (daemonSets.length !== 1 || !daemonSets[0].spec?.template) throw new Error(`${path}: expected exactly one DaemonSet with a pod template`);
  const daemonSet = daemonSets[0] as Manifest['daemonSet'];
  return { objects, daemonSet, podSpec: daemonSet.spec.template.spec, namespace: daemonSet.metadata.namespace ?? 'default' };
}

/** What the kubelet knows about the node and the API server, per node. */
export interface NodeContext {
  nodeName: string;
  nodeIP: string;
  podName: string;
  /** hostPath `/x/y` becomes `<hostRoot>/x/y` */
  hostRoot: string;
  /** where ConfigMap volumes and the service-account volume are written */
  volumeDir: string;
  apiHost: string;
  apiPort: number;
  token: string;
  caPem: string;
}

/** hostPath's path under the node's root, created as its `type` says (and as a plain dir when unset). */
export function hostPathOn(ctx: NodeContext, hostPath: { path: string; type?: string }): string {
  const p = join(ctx.hostRoot, hostPath.path);
  const type = hostPath.type ?? '';
  if (type === 'FileOrCreate') {
    mkdirSync(dirname(p), { recursive: true });
    if (!existsSync(p)) writeFileSync(p, '');
  } else if (type === '' || type === 'DirectoryOrCreate' || type === 'Directory') {
    mkdirSync(p, { recursive: true });
  } else {
    throw new Error(`hostPath type ${type} is not emulated`);
  }
  return p;
}

function volumeSource(m: Manifest, ctx: NodeContext, vol: Volume): string {
  if (vol.hostPath) return hostPathOn(ctx, vol.hostPath);
  const dir = join(ctx.volumeDir, vol.name);
  mkdirSync(dir, { recursive: true });
  if (vol.configMap) {
    const name = vol.configMap.name;
    const cm = m.objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
    if (!cm?.data) throw new Error(`volume ${vol.name}: no ConfigMap ${name} with data in the manifest`);
    const items = vol.configMap.items ?? Object.keys(cm.data).map((key) => ({ key, path: key }));
    for (const { key, path } of items) writeFileSync(join(dir, path), cm.data[key] ?? '');
    return dir;
  }
  if (vol.emptyDir) return dir;
  throw new Error(`volume ${vol.name}: source ${Object.keys(vol).filter((k) => k !== 'name').join(',')} is not emulated`);
}

/** The projected service-account volume every pod gets: token, ca.crt, namespace. */
function serviceAccountDir(m: Manifest, ctx: NodeContext): string {
  const dir = join(ctx.volumeDir, 'kube-api-access');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'token'), ctx.token);
  writeFileSync(join(dir, 'ca.crt'), ctx.caPem);
  writeFileSync(join(dir, 'namespace'), m.namespace);
  return dir;
}

function fieldRefValue(m: Manifest, ctx: NodeContext, fieldPath: string): string {
  const values: Record<string, string> = {
    'spec.nodeName': ctx.nodeName,
    'metadata.name': ctx.podName,
    'metadata.namespace': m.namespace,
    'spec.serviceAccountName': m.podSpec.serviceAccountName ?? 'default',
    // hostNetwork: the pod's IP is the node's
    'status.hostIP': ctx.nodeIP,
    'status.podIP': ctx.nodeIP,
  };
  const v = values[fieldPath];
  if (v === undefined) throw new Error(`downward API field ${fieldPath} is not emulated`);
  return v;
}

function envArgs(m: Manifest, ctx: NodeContext, c: Container): string[] {
  const env: Record<string, string> = {
    KUBERNETES_SERVICE_HOST: ctx.apiHost,
    KUBERNETES_SERVICE_PORT: String(ctx.apiPort),
    KUBERNETES_PORT: `tcp://${ctx.apiHost}:${ctx.apiPort}`,
  };
  for (const e of c.env ?? []) {
    // As the kubelet does: $(VAR) names a variable defined before this one ($$ escapes).
    if (e.value !== undefined) env[e.name] = e.value.replace(/\$\$|\$\((\w+)\)/g, (m, v: string | undefined) => (v === undefined ? '$' : env[v] ?? m));
    else if (e.valueFrom?.fieldRef) env[e.name] = fieldRefValue(m, ctx, e.valueFrom.fieldRef.fieldPath);
    else if (e.valueFrom) throw new Error(`env ${e.name}: valueFrom ${Object.keys(e.valueFrom).join(',')} is not emulated`);
    else env[e.name] = '';
  }
  return Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
}

function mountArgs(m: Manifest, ctx: NodeContext, c: Container): string[] {
  const volumes = new Map((m.podSpec.volumes ?? []).map((v) => [v.name, v]));
  const args: string[] = [];
  for (const vm of c.volumeMounts ?? []) {
    const vol = volumes.get(vm.name);
    if (!vol) throw new Error(`container ${c.name}: volumeMount ${vm.name} names no volume`);
    if (vm.subPath) throw new Error(`container ${c.name}: subPath is not emulated`);
    const opts = [vm.readOnly ? 'ro' : 'rw'];
    if (vm.mountPropagation === 'Bidirectional') opts.push('rshared');
    else if (vm.mountPropagation === 'HostToContainer') opts.push('rslave');
    args.push('--volume', `${volumeSource(m, ctx, vol)}:${vm.mountPath}:${opts.join(',')}`);
  }
  args.push('--volume', `${serviceAccountDir(m, ctx)}:/var/run/secrets/kubernetes.io/serviceaccount:ro`);
  return args;
}

function securityArgs(c: Container): string[] {
  const sc = c.securityContext ?? {};
  if (sc.privileged) return ['--privileged'];
  const args: string[] = [];
  for (const cap of sc.capabilities?.add ?? []) args.push('--cap-add', cap);
  for (const cap of sc.capabilities?.drop ?? []) args.push('--cap-drop', cap);
  return args;
}

/**
 * `podman run` arguments (after `run`) for one container of the pod: the
 * node's network (hostNetwork), command as entrypoint and args as arguments,
 * as the kubelet maps them onto the image's ENTRYPOINT and CMD.
 */
export function podmanRunArgs(m: Manifest, ctx: NodeContext, c: Container, name: string): string[] {
  if (!m.podSpec.hostNetwork) throw new Error('only hostNetwork pods are emulated');
  const entry = c.command ? ['--entrypoint', JSON.stringify(c.command)] : [];
  return [
    '--name', name, '--network', 'host', '--hostname', ctx.nodeName,
    ...(m.podSpec.hostPID ? ['--pid', 'host'] : []),
    ...envArgs(m, ctx, c), ...mountArgs(m, ctx, c), ...securityArgs(c), ...entry,
    c.image, ...(c.args ?? []),
  ];
}

/** The URL a kubelet's httpGet probe requests (for hostNetwork pods, in the node's network). */
export function probeUrl(c: Container, p: HttpProbe | undefined, nodeIP: string): string | undefined {
  if (!p?.httpGet) return undefined;
  const g = p.httpGet;
  // a named port is looked up in the container's ports, as the kubelet does
  const port = typeof g.port === 'string' && !/^\d+$/.test(g.port) ? c.ports?.find((x) => x.name === g.port)?.containerPort : g.port;
  if (port === undefined) throw new Error(`probe port ${g.port} names no port of ${c.name}`);
  return `${(g.scheme ?? 'HTTP').toLowerCase()}://${g.host ?? nodeIP}:${port}${g.path ?? '/'}`;
}
