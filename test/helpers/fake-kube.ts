// A small in-memory Kubernetes API server for Nodes, shaped like the real one
// where tsflanneld can tell the difference: list with a resourceVersion,
// watch as a chunked stream of JSON lines replayed from a history, 410 for a
// compacted resourceVersion, merge and strategic merge patches, and the
// status subresource keeping spec (and the main resource keeping status).
// Test controls change Nodes behind the client's back, drop watch streams,
// inject failures and record every request with its RBAC verb and resource.
// At scale: thousands of Nodes, a bounded watch history that expires like the
// API server's watch cache, BOOKMARK events for watches that allow them (on
// demand, and once a minute as kube-apiserver sends them),
// status-only heartbeats, and bursts written to the watch streams at once.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export interface FakeNodeCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastHeartbeatTime?: string;
  lastTransitionTime?: string;
}

export interface FakeNode {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: {
    name: string;
    uid: string;
    resourceVersion: string;
    creationTimestamp: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
  };
  spec: { podCIDR?: string; podCIDRs?: string[] };
  status: { conditions?: FakeNodeCondition[] };
}

export interface RecordedRequest {
  method: string;
  /** path without the query string */
  path: string;
  query: Record<string, string>;
  /** what the API server's RBAC check would see */
  verb: string;
  resource: string;
  contentType?: string;
  authorization?: string;
  body?: unknown;
  /** the status the fake answered with (200 for a watch that was accepted) */
  status?: number;
}

export interface FakeKubeOptions {
  /** when set, requests without `Authorization: Bearer <token>` get 401 */
  token?: string;
  /** serve HTTPS with this key and certificate (PEM), as kube-apiserver does */
  tls?: { key: string; cert: string };
  /** watch events kept for watches that resume; older resourceVersions get 410 Gone (default 1000) */
  historyLimit?: number;
  /**
   * Send every watch that allows them a BOOKMARK this often, as kube-apiserver's
   * watch cache does (its defaultBookmarkFrequency, a minute, the default here); 0 = never.
   */
  bookmarkEveryMs?: number;
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: FakeNode;
}

interface Watcher {
  res: ServerResponse;
  timer?: NodeJS.Timeout;
  /** periodic bookmarks (bookmarkEveryMs) */
  ticker?: NodeJS.Timeout;
  /** the client sent allowWatchBookmarks=true */
  bookmarks: boolean;
}

/** The RBAC (verb, resource) of a request, as kube-apiserver's RequestInfo derives it. */
export function classifyRequest(method: string, path: string, query: Record<string, string>): { verb: string; resource: string } {
  const parts = path.split('/').filter(Boolean);
  // /api/v1/[watch/]nodes[/name[/subresource]]
  let rest = parts.slice(0, 2).join('/') === 'api/v1' ? parts.slice(2) : parts;
  let watchPath = false;
  if (rest[0] === 'watch') {
    watchPath = true;
    rest = rest.slice(1);
  }
  const resource = rest.length >= 3 ? `${rest[0]}/${rest[2]}` : (rest[0] ?? '');
  const named = rest.length >= 2;
  const isWatch = watchPath || query.watch === 'true' || query.watch === '1';
  const verbs: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: named ? 'delete' : 'deletecollection' };
  if (method === 'GET' || method === 'HEAD') return { verb: isWatch ? 'watch' : named ? 'get' : 'list', resource };
  return { verb: verbs[method] ?? method.toLowerCase(), resource };
}

export class FakeKube {
  readonly requests: RecordedRequest[] = [];
  private readonly nodes = new Map<string, FakeNode>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 100;
  /** watches from a resourceVersion older than this get 410 Gone */
  private oldestWatchable = 0;
  private expireWatches = 0;
  private failures: Array<{ status: number; filter?: (r: RecordedRequest) => boolean }> = [];
  private corked = false;
  private stalls: Array<(r: RecordedRequest) => boolean> = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly opts: FakeKubeOptions,
  ) {}

  static async start(opts: FakeKubeOptions = {}): Promise<FakeKube> {
    let fake: FakeKube | undefined;
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      fake!.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendStatus(res, 500, 'InternalError', String(err));
        else res.destroy();
      });
    };
    const server = opts.tls ? createTlsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    fake = new FakeKube(server, `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`, opts);
    return fake;
  }

  // ---- test controls ----------------------------------------------------

  /** `podCIDR` as an array sets spec.podCIDRs (dual-stack: one CIDR per family), podCIDR its first entry. */
  addNode(name: string, podCIDR?: string | string[], annotations?: Record<string, string>): FakeNode {
    if (this.nodes.has(name)) throw new Error(`node ${name} exists`);
    const node: FakeNode = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, uid: randomUUID(), resourceVersion: '', creationTimestamp: new Date().toISOString() },
      spec: {},
      status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }] },
    };
    if (annotations) node.metadata.annotations = { ...annotations };
    if (podCIDR?.length) node.spec = podCIDRSpec(podCIDR);
    return this.store('ADDED', node);
  }

  setPodCIDR(name: string, podCIDR: string | string[] | undefined): FakeNode {
    return this.mutate(name, true, (n) => {
      n.spec = podCIDR?.length ? podCIDRSpec(podCIDR) : {};
    });
  }

  /**
   * Merges `annotations` into the node's; a null value removes that key.
   * `notify: false` hides the change from open watches (a lost event).
   */
  setAnnotations(name: string, annotations: Record<string, string | null>, opts: { notify?: boolean } = {}): FakeNode {
    return this.mutate(name, opts.notify ?? true, (n) => {
      const merged = { ...(n.metadata.annotations ?? {}) };
      for (const [k, v] of Object.entries(annotations)) {
        if (v === null) delete merged[k];
        else merged[k] = v;
      }
      n.metadata.annotations = merged;
    });
  }

  /** Adds `count` Nodes named `<prefix>-<i>` at once (one watch write per Node, as `addNode`). */
  addNodes(count: number, make: (i: number) => { name: string; podCIDR?: string; annotations?: Record<string, string> }): void {
    for (let i = 0; i < count; i++) {
      const n = make(i);
      this.addNode(n.name, n.podCIDR, n.annotations);
    }
  }

  /** Sets one status condition (replacing one of its type), as a kubelet or controller would. */
  setCondition(name: string, condition: FakeNodeCondition): FakeNode {
    return this.mutate(name, true, (n) => {
      n.status.conditions = [...(n.status.conditions ?? []).filter((c) => c.type !== condition.type), condition];
    });
  }

  /** A kubelet status heartbeat: only status.conditions[Ready].lastHeartbeatTime changes. */
  heartbeat(name: string, at = new Date()): FakeNode {
    return this.mutate(name, true, (n) => {
      const conditions = n.status.conditions ?? [];
      const ready = conditions.find((c) => c.type === 'Ready');
      if (ready) ready.lastHeartbeatTime = at.toISOString();
      else conditions.push({ type: 'Ready', status: 'True', reason: 'KubeletReady', lastHeartbeatTime: at.toISOString() });
      n.status.conditions = conditions;
    });
  }

  /**
   * Runs `changes` with every watch stream corked, so their events leave in
   * as few writes as the socket takes: a burst arriving at once.
   */
  burst(changes: () => void): void {
    this.corked = true;
    for (const w of this.watchers) w.res.cork();
    try {
      changes();
    } finally {
      this.corked = false;
      for (const w of this.watchers) w.res.uncork();
    }
  }

  /** Writes to other resources (Pods, Leases) move the global resourceVersion without a Node event. */
  advanceResourceVersion(by: number): string {
    this.rv += by;
    return this.resourceVersion;
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows them; returns how many. */
  bookmark(): number {
    let sent = 0;
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      writeBookmark(w.res, this.rv);
      sent++;
    }
    return sent;
  }

  /** Requests so far by RBAC verb: list, watch, get, patch. */
  count(verb: string): number {
    let n = 0;
    for (const r of this.requests) if (r.verb === verb) n++;
    return n;
  }

  /** A change that is not about leases, like a kubelet heartbeat. */
  touch(name: string): FakeNode {
    return this.mutate(name, true, (n) => {
      n.metadata.labels = { ...(n.metadata.labels ?? {}), heartbeat: String(Date.now()) };
    });
  }

  deleteNode(name: string): void {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    this.nodes.delete(name);
    const gone = structuredClone(node);
    gone.metadata.resourceVersion = String(++this.rv);
    this.publish({ rv: this.rv, type: 'DELETED', object: gone });
  }

  getNode(name: string): FakeNode | undefined {
    const node = this.nodes.get(name);
    return node ? structuredClone(node) : undefined;
  }

  /** Ends every open watch stream; `abrupt` resets the sockets instead of finishing the response. */
  closeWatches(mode: 'graceful' | 'abrupt' = 'graceful'): number {
    const n = this.watchers.size;
    for (const w of [...this.watchers]) this.endWatch(w, mode);
    return n;
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  /** The next `n` requests (matching `filter`, if given) are answered with `status`. */
  failNextRequests(n: number, status = 500, filter?: (r: RecordedRequest) => boolean): void {
    for (let i = 0; i < n; i++) this.failures.push(filter ? { status, filter } : { status });
  }

  /** The next `n` requests matching `filter` get the start of a 200 answer and then nothing, as through a stalled proxy. */
  stallNextRequests(n: number, filter: (r: RecordedRequest) => boolean): void {
    for (let i = 0; i < n; i++) this.stalls.push(filter);
  }

  /** The next `n` watch requests get a 410 Gone ERROR event, as after etcd compaction. */
  expireNextWatches(n: number): void {
    this.expireWatches += n;
  }

  /** Forgets the watch history, so watching from any earlier resourceVersion gets 410 Gone. */
  compact(): void {
    this.history.length = 0;
    this.oldestWatchable = this.rv + 1;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  async close(): Promise<void> {
    this.closeWatches('abrupt');
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- state --------------------------------------------------------------

  private mutate(name: string, notify: boolean, change: (n: FakeNode) => void): FakeNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    const next = structuredClone(node);
    change(next);
    return this.store('MODIFIED', next, notify);
  }

  private store(type: 'ADDED' | 'MODIFIED', node: FakeNode, notify = true): FakeNode {
    const old = this.nodes.get(node.metadata.name);
    if (old && type === 'MODIFIED' && isDeepStrictEqual(withoutRv(old), withoutRv(node))) return structuredClone(old);
    node.metadata.resourceVersion = String(++this.rv);
    this.nodes.set(node.metadata.name, node);
    this.publish({ rv: this.rv, type, object: structuredClone(node) }, notify);
    return structuredClone(node);
  }

  private publish(event: WatchEvent, notify = true): void {
    this.history.push(event);
    // Like the watch cache's window: what falls out can no longer be watched from.
    const limit = this.opts.historyLimit ?? 1000;
    if (this.history.length > limit) {
      const dropped = this.history.splice(0, this.history.length - limit);
      this.oldestWatchable = Math.max(this.oldestWatchable, dropped.at(-1)!.rv + 1);
    }
    if (!notify) return;
    for (const w of this.watchers) writeEvent(w.res, event.type, event.object);
  }

  private endWatch(w: Watcher, mode: 'graceful' | 'abrupt'): void {
    this.watchers.delete(w);
    if (w.timer) clearTimeout(w.timer);
    if (w.ticker) clearInterval(w.ticker);
    if (mode === 'abrupt') w.res.destroy();
    else w.res.end();
  }

  // ---- HTTP ---------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? 'GET';
    const record: RecordedRequest = { method, path: url.pathname, query, ...classifyRequest(method, url.pathname, query) };
    if (req.headers['content-type']) record.contentType = req.headers['content-type'];
    if (req.headers.authorization) record.authorization = req.headers.authorization;
    this.requests.push(record);
    const text = await readBody(req);
    if (text) record.body = safeParse(text);
    const reply = (status: number, reason: string, message: string): void => {
      record.status = status;
      sendStatus(res, status, reason, message);
    };

    if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
      return reply(401, 'Unauthorized', 'Unauthorized');
    }
    const failure = this.failures.findIndex((f) => !f.filter || f.filter(record));
    if (failure >= 0) {
      const [f] = this.failures.splice(failure, 1);
      return reply(f!.status, 'InternalError', 'injected failure');
    }

    const stall = this.stalls.findIndex((f) => f(record));
    if (stall >= 0) {
      this.stalls.splice(stall, 1);
      record.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"kind":"NodeList","apiVersion":"v1","items":[');
      return;
    }

    const m = /^\/api\/v1\/(?:(watch)\/)?nodes(?:\/([^/]+)(?:\/(status))?)?$/.exec(url.pathname);
    if (!m) return reply(404, 'NotFound', `the server could not find the requested resource ${url.pathname}`);
    const [, , name, sub] = m;
    if (record.verb === 'watch' && !name) return this.serveWatch(query, res, record);
    if (record.verb === 'list') {
      // kube-apiserver answers a list "not older than" a version it has not reached with 504 after a wait.
      const want = Number(query.resourceVersion ?? '0');
      if (Number.isFinite(want) && want > this.rv) return reply(504, 'Timeout', `Too large resource version: ${want}, current: ${this.rv}`);
      return sendJson(res, (record.status = 200), this.list());
    }
    if (!name) return reply(405, 'MethodNotAllowed', `${method} not allowed`);
    const node = this.nodes.get(decodeURIComponent(name));
    if (!node) return reply(404, 'NotFound', `nodes "${name}" not found`);
    if (record.verb === 'get') return sendJson(res, (record.status = 200), node);
    if (record.verb === 'patch') {
      const result = this.patch(node, sub === 'status', record.contentType ?? '', record.body);
      if (typeof result === 'string') return reply(result.startsWith('415') ? 415 : result.startsWith('409') ? 409 : 422, 'Invalid', result);
      return sendJson(res, (record.status = 200), result);
    }
    return reply(405, 'MethodNotAllowed', `${method} not supported by the fake`);
  }

  private list(): JsonObject {
    return {
      kind: 'NodeList',
      apiVersion: 'v1',
      metadata: { resourceVersion: String(this.rv) },
      items: [...this.nodes.values()] as unknown as Json[],
    };
  }

  private patch(node: FakeNode, status: boolean, contentType: string, body: unknown): FakeNode | string {
    const type = contentType.split(';')[0]!.trim();
    if (type !== 'application/merge-patch+json' && type !== 'application/strategic-merge-patch+json') {
      return `415 unsupported patch type ${JSON.stringify(type)}`;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return '422 patch is not a JSON object';
    const patch = body as JsonObject;
    const wantRv = (patch.metadata as JsonObject | undefined)?.resourceVersion;
    if (typeof wantRv === 'string' && wantRv !== node.metadata.resourceVersion) return '409 the object has been modified';
    const strategic = type === 'application/strategic-merge-patch+json';
    const merged = (strategic ? strategicMerge : mergePatch)(structuredClone(node) as unknown as Json, patch) as unknown as FakeNode;
    // What the registry's strategies do: the status subresource ignores spec, the main resource ignores status.
    if (status) merged.spec = structuredClone(node.spec);
    else merged.status = structuredClone(node.status);
    merged.metadata.name = node.metadata.name;
    merged.metadata.uid = node.metadata.uid;
    merged.metadata.resourceVersion = node.metadata.resourceVersion;
    const annotations = merged.metadata.annotations ?? {};
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string') return `422 annotation ${k} is not a string`;
    }
    return this.store('MODIFIED', merged);
  }

  private serveWatch(query: Record<string, string>, res: ServerResponse, record: RecordedRequest): void {
    record.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache' });
    res.flushHeaders();
    const from = query.resourceVersion;
    if (from === undefined || from === '' || from === '0') {
      for (const node of this.nodes.values()) writeEvent(res, 'ADDED', node);
    } else {
      const rv = Number(from);
      const forced = this.expireWatches > 0;
      if (forced) this.expireWatches--;
      if (forced || !Number.isInteger(rv) || rv + 1 < this.oldestWatchable) {
        writeLine(res, { type: 'ERROR', object: statusObject(410, 'Expired', `too old resource version: ${from} (${this.oldestWatchable})`) });
        res.end();
        return;
      }
      for (const ev of this.history) if (ev.rv > rv) writeEvent(res, ev.type, ev.object);
    }
    const watcher: Watcher = { res, bookmarks: query.allowWatchBookmarks === 'true' };
    if (this.corked) res.cork();
    const timeout = Number(query.timeoutSeconds);
    if (Number.isFinite(timeout) && timeout > 0) watcher.timer = setTimeout(() => this.endWatch(watcher, 'graceful'), timeout * 1000);
    const every = this.opts.bookmarkEveryMs ?? 60_000;
    if (watcher.bookmarks && every > 0) {
      watcher.ticker = setInterval(() => writeBookmark(res, this.rv), every);
    }
    this.watchers.add(watcher);
    res.on('close', () => {
      if (watcher.timer) clearTimeout(watcher.timer);
      if (watcher.ticker) clearInterval(watcher.ticker);
      this.watchers.delete(watcher);
    });
  }
}

function withoutRv(node: FakeNode): FakeNode {
  const copy = structuredClone(node);
  copy.metadata.resourceVersion = '';
  return copy;
}

/** RFC 7386 JSON merge patch. */
/** spec as the node IPAM controller writes it: podCIDR is podCIDRs[0]. */
function podCIDRSpec(podCIDR: string | string[]): FakeNode['spec'] {
  const all = typeof podCIDR === 'string' ? [podCIDR] : podCIDR;
  return { podCIDR: all[0]!, podCIDRs: [...all] };
}

export function mergePatch(target: Json, patch: Json): Json {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: JsonObject = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key] ?? null, value);
  }
  return out;
}

// Lists of a Node the API merges element-wise, by this key, in a strategic merge patch.
const MERGE_KEYS: Record<string, string> = { 'status.conditions': 'type', 'status.addresses': 'type' };

/** Strategic merge patch for the Node fields tsflanneld touches (maps merge, keyed lists merge). */
export function strategicMerge(target: Json, patch: Json, path = ''): Json {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: JsonObject = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$setElementOrder/') || key === '$retainKeys') continue;
    const childPath = path ? `${path}.${key}` : key;
    const mergeKey = MERGE_KEYS[childPath];
    if (value === null) delete out[key];
    else if (mergeKey && Array.isArray(value)) out[key] = mergeKeyedList(Array.isArray(out[key]) ? (out[key] as Json[]) : [], value, mergeKey);
    else out[key] = strategicMerge(out[key] ?? null, value, childPath);
  }
  return out;
}

function mergeKeyedList(current: Json[], patch: Json[], key: string): Json[] {
  const out = [...current];
  for (const item of patch) {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) continue;
    const idx = out.findIndex((c) => c !== null && typeof c === 'object' && !Array.isArray(c) && c[key] === item[key]);
    if (item.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
    } else if (idx >= 0) out[idx] = mergePatch(out[idx]!, item);
    else out.push(item);
  }
  return out;
}

function statusObject(code: number, reason: string, message: string): JsonObject {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, statusObject(code, reason, message));
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function writeEvent(res: ServerResponse, type: string, object: FakeNode): void {
  writeLine(res, { type, object: object as unknown as Json });
}

function writeBookmark(res: ServerResponse, rv: number): void {
  writeLine(res, { type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } } });
}

function writeLine(res: ServerResponse, value: JsonObject): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(value)}\n`);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
