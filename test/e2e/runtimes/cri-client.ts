// A small typed CRI RuntimeService client over containerd's gRPC socket: the
// calls a kubelet makes to run a pod, so the tests exercise the same code
// path (RunPodSandbox -> CNI ADD, StopPodSandbox/RemovePodSandbox -> DEL).
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

const PROTO = fileURLToPath(new URL('./cri.proto', import.meta.url));

export interface PortMapping {
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  containerPort: number;
  hostPort: number;
  hostIp?: string;
}

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  portMappings?: PortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: { key: string; value: string }[];
  logPath?: string;
}

export interface PodSandboxStatus {
  id: string;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network: { ip: string; additionalIps: { ip: string }[] } | null;
  metadata: { name: string; uid: string; namespace: string };
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
type Method = (req: object, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<unknown>) => grpc.ClientUnaryCall;

let serviceCtor: grpc.ServiceClientConstructor | undefined;

function loadService(): grpc.ServiceClientConstructor {
  if (serviceCtor) return serviceCtor;
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
  serviceCtor = pkg.runtime.v1.RuntimeService;
  return serviceCtor;
}

export class CriClient {
  private readonly client: grpc.Client;

  /** `socket` is the containerd gRPC socket path; each call fails after `timeoutMs`. */
  constructor(readonly socket: string, private readonly timeoutMs = 60_000) {
    const Service = loadService();
    this.client = new Service(`unix://${socket}`, grpc.credentials.createInsecure());
  }

  private call<T>(name: string, req: object, timeoutMs = this.timeoutMs): Promise<T> {
    const method = (this.client as unknown as Record<string, Method>)[name];
    return new Promise<T>((resolve, reject) => {
      method.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, value) => {
        if (err) reject(new Error(`CRI ${name}: ${err.details || err.message}`));
        else resolve(value as T);
      });
    });
  }

  async version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.call('Version', { version: 'v1' });
  }

  async conditions(): Promise<RuntimeCondition[]> {
    const res = await this.call<{ status: { conditions: RuntimeCondition[] } | null }>('Status', { verbose: false });
    return res.status?.conditions ?? [];
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    const res = await this.call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler: '' });
    return res.podSandboxId;
  }

  async podSandboxStatus(id: string): Promise<{ status: PodSandboxStatus; info: Record<string, string> }> {
    const res = await this.call<{ status: PodSandboxStatus | null; info: Record<string, string> }>('PodSandboxStatus', { podSandboxId: id, verbose: true });
    if (!res.status) throw new Error(`CRI PodSandboxStatus: no status for ${id}`);
    return { status: res.status, info: res.info };
  }

  /** The sandbox's network namespace path, from the verbose status info. */
  async sandboxNetns(id: string): Promise<string> {
    const { info } = await this.podSandboxStatus(id);
    const parsed = JSON.parse(info.info ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } } };
    const net = parsed.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network');
    if (!net?.path) throw new Error(`no network namespace in the status of sandbox ${id}`);
    return net.path;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id });
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const res = await this.call<{ containerId: string }>('CreateContainer', { podSandboxId, config, sandboxConfig });
    return res.containerId;
  }

  async startContainer(id: string): Promise<void> {
    await this.call('StartContainer', { containerId: id });
  }

  async stopContainer(id: string, timeoutSeconds = 0): Promise<void> {
    await this.call('StopContainer', { containerId: id, timeout: timeoutSeconds });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call('RemoveContainer', { containerId: id });
  }

  async execSync(id: string, cmd: string[], timeoutSeconds = 20): Promise<ExecResult> {
    const res = await this.call<{ stdout: Buffer; stderr: Buffer; exitCode: number }>(
      'ExecSync', { containerId: id, cmd, timeout: timeoutSeconds }, (timeoutSeconds + 10) * 1000,
    );
    return { stdout: res.stdout.toString(), stderr: res.stderr.toString(), exitCode: res.exitCode };
  }

  close(): void {
    this.client.close();
  }
}
