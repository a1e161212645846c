// How tsflanneld reaches etcd: flannel's --etcd-cafile / --etcd-certfile /
// --etcd-keyfile / --etcd-username / --etcd-password turned into etcd3
// client options, and a first call that tells a wrong CA, a missing client
// certificate or a wrong password apart from "etcd is not up yet" — the
// former cannot heal by retrying, so the agent exits naming the flag.
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, type IOptions } from 'etcd3';

export interface EtcdSecurity {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
}

/** A problem of the TLS or auth settings: retrying cannot cure it. */
export class EtcdAccessError extends Error {
  override readonly name = 'EtcdAccessError';
}

function readPem(flag: string, path: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new EtcdAccessError(`--${flag} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!data.includes('-----BEGIN ')) throw new EtcdAccessError(`--${flag} ${path}: not a PEM file`);
  return data;
}

/** True when the client talks TLS: a TLS flag is given or an endpoint is https://. */
export function usesTls(endpoints: string[], sec: EtcdSecurity): boolean {
  return Boolean(sec.caFile || sec.certFile || sec.keyFile) || endpoints.some((e) => e.startsWith('https://'));
}

/** etcd3 options for these endpoints and settings; throws EtcdAccessError naming the flag. */
export function etcdClientOptions(endpoints: string[], sec: EtcdSecurity): Pick<IOptions, 'hosts' | 'credentials' | 'auth'> {
  const out: Pick<IOptions, 'hosts' | 'credentials' | 'auth'> = { hosts: endpoints };
  if ((sec.certFile === undefined) !== (sec.keyFile === undefined)) {
    throw new EtcdAccessError('--etcd-certfile and --etcd-keyfile go together: give both or neither');
  }
  if (sec.caFile || sec.certFile) {
    const plain = endpoints.filter((e) => e.startsWith('http://'));
    if (plain.length > 0) {
      throw new EtcdAccessError(`--etcd-cafile/--etcd-certfile are set but ${plain.join(', ')} says http://; write https:// endpoints`);
    }
    // etcd3 needs a root certificate to pass a client pair; without
    // --etcd-cafile, Node's own CA bundle (what an https:// endpoint alone gets).
    const credentials: NonNullable<IOptions['credentials']> = {
      rootCertificate: sec.caFile ? readPem('etcd-cafile', sec.caFile) : Buffer.from(rootCertificates.join('\n')),
    };
    if (sec.certFile && sec.keyFile) {
      credentials.certChain = readPem('etcd-certfile', sec.certFile);
      credentials.privateKey = readPem('etcd-keyfile', sec.keyFile);
    }
    out.credentials = credentials;
  }
  if (sec.username !== undefined) {
    if (sec.password === undefined) throw new EtcdAccessError('--etcd-username needs --etcd-password (or FLANNELD_ETCD_PASSWORD)');
    out.auth = { username: sec.username, password: sec.password };
  } else if (sec.password !== undefined) {
    throw new EtcdAccessError('--etcd-password needs --etcd-username');
  }
  return out;
}

function messages(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; depth++) {
    parts.push(e.message);
    e = (e as { cause?: unknown }).cause;
  }
  return parts.join(' | ');
}

/**
 * The access problem behind an etcd error, as one sentence naming the flag
 * to fix, or undefined when the error is something else (etcd down, slow).
 */
export function describeAccessError(err: unknown, sec: EtcdSecurity): string | undefined {
  const text = messages(err);
  if (err instanceof EtcdAuthenticationFailedError || /authentication failed|invalid user ID or password/i.test(text)) {
    return `etcd refused user ${JSON.stringify(sec.username ?? '')}: wrong --etcd-username or --etcd-password`;
  }
  if (/user name is empty|user name not found/i.test(text)) {
    return 'etcd has authentication enabled: give --etcd-username and --etcd-password';
  }
  if (err instanceof EtcdPermissionDeniedError || /permission denied/i.test(text)) {
    return sec.username === undefined
      ? 'etcd denied access: it has authentication enabled; give --etcd-username and --etcd-password'
      : `etcd denied user ${JSON.stringify(sec.username)} access to the prefix: grant its role read/write on it`;
  }
  if (/self[- ]signed|unable to (get|verify)|unknown ca|certificate verify failed|UNABLE_TO_|DEPTH_ZERO|CERT_SIGNATURE|Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME/i.test(text)) {
    return sec.caFile
      ? `the etcd server's certificate does not verify against --etcd-cafile ${sec.caFile}: ${text.slice(0, 200)}`
      : `the etcd server's certificate does not verify against the system CAs: give --etcd-cafile (${text.slice(0, 200)})`;
  }
  if (/certificate required|bad certificate|handshake failure|alert number 4[0-9]/i.test(text)) {
    return sec.certFile
      ? `etcd rejected the client certificate --etcd-certfile ${sec.certFile} (signed by a CA etcd trusts?)`
      : 'etcd requires a client certificate: give --etcd-certfile and --etcd-keyfile';
  }
  if (/wrong version number|packet length too long|http2.*(preface|frame)|Protocol error/i.test(text)) {
    return 'TLS mismatch: https:// or --etcd-cafile against a plain-http etcd (or the reverse); check --etcd-endpoints';
  }
  return undefined;
}

/** How an attempt failed that did not name a setting. */
type FailureKind = 'refused' | 'dropped' | 'other';

/**
 * refused: nothing listens (etcd down, restarting, not started yet).
 * dropped: the connection closed or reset after the TLS handshake, before
 * etcd said anything: the words grpc-js uses once TLS is up and the HTTP/2
 * session is being set up (a TLS 1.3 server checks our certificate after
 * the handshake is over on our side, and may close without an alert, or
 * its alert may be lost in a proxy). A hang-up before TLS (a proxy with no
 * etcd behind it, `connect ECONNRESET`) is not a drop.
 */
function failureKind(text: string): FailureKind {
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/.test(text)) return 'refused';
  if (/before secure TLS connection was established|connect ECONNRESET/.test(text)) return 'other';
  if (/Failed to connect|Connection closed before starting HTTP\/2 handshake|read ECONNRESET|socket hang up|Connection dropped|EPIPE/.test(text)) return 'dropped';
  return 'other';
}

export interface AccessCheckOptions {
  /** deadline of one attempt */
  timeoutMs?: number;
  /** first pause between attempts; it doubles up to maxRetryMs */
  retryMs?: number;
  maxRetryMs?: number;
  /** drops after the handshake in a row, with a client certificate, that mean etcd rejects it */
  dropsForVerdict?: number;
  /** deadlines in a row after which the check gives up (resolves false): see checkEtcdAccess */
  maxDeadlines?: number;
  /** the agent stops: the check ends with false */
  signal?: AbortSignal;
  /** an attempt without a verdict; the reason is the error's text */
  onRetry?: (reason: string, attempt: number) => void;
}

/** Resolves after `ms` or at once when `signal` aborts; its timer never keeps the process alive. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** One read with a fresh client: true, or the error; a stop closes the client at once. */
async function attemptRead(options: ReturnType<typeof etcdClientOptions>, key: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<true | { err: unknown }> {
  const client = new Etcd3({
    ...options,
    dialTimeout: timeoutMs,
    defaultCallOptions: () => ({ deadline: Date.now() + timeoutMs }),
  });
  const stop = () => client.close();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await client.get(key).string();
    return true;
  } catch (err) {
    return { err };
  } finally {
    signal?.removeEventListener('abort', stop);
    client.close();
  }
}

/**
 * Reads `key` with these settings until there is a verdict: true when the
 * read works; EtcdAccessError for settings that retrying cannot fix; false
 * only when `signal` stops the check first. Anything else (etcd refusing
 * connections because it is down or restarting, a bare deadline on a loaded
 * host) is no verdict: it tries again, quickly at first, then every
 * maxRetryMs, so an etcd that comes up later with TLS that rejects us still
 * ends in the error naming the flag. With a client certificate, a
 * connection dropped right after the handshake on dropsForVerdict attempts
 * in a row is etcd rejecting that certificate (a refused or other failure in
 * between starts the count again: etcd restarting is not a rejection).
 * Each endpoint is tried in turn, with its own counts. The check also
 * resolves false, without a verdict, once every endpoint has run into its
 * deadline on maxDeadlines attempts in a row (a hung etcd).
 */
export async function checkEtcdAccess(endpoints: string[], sec: EtcdSecurity, key: string, opts: AccessCheckOptions = {}): Promise<boolean> {
  const { timeoutMs = 5000, retryMs = 250, maxRetryMs = 5000, dropsForVerdict = 3, maxDeadlines = 10, signal, onRetry } = opts;
  // The settings' own errors first, and their files read once.
  const options = etcdClientOptions(endpoints, sec);
  // One endpoint per attempt, in turn, each with its own counts: a client
  // over all of them picks one per attempt, and one refusing (down) between
  // the drops of another (rejecting the certificate) reset the count, so
  // that pair never gave a verdict.
  let live = endpoints.map((endpoint) => ({ endpoint, drops: 0, deadlines: 0 }));
  for (let attempt = 1; !signal?.aborted && live.length > 0; attempt++) {
    const state = live[(attempt - 1) % live.length]!;
    const result = await attemptRead({ ...options, hosts: [state.endpoint] }, key, timeoutMs, signal);
    if (result === true) return true;
    if (signal?.aborted) break;
    const problem = describeAccessError(result.err, sec);
    if (problem) throw new EtcdAccessError(problem);
    const text = messages(result.err);
    const kind = failureKind(text);
    // a bare deadline says nothing either way: it neither counts nor resets
    const deadline = kind !== 'dropped' && /deadline/i.test(text);
    if (kind === 'dropped') state.drops++;
    else if (!deadline) state.drops = 0;
    state.deadlines = deadline ? state.deadlines + 1 : 0;
    if (sec.certFile && state.drops >= dropsForVerdict) {
      throw new EtcdAccessError(
        `etcd rejected the client certificate --etcd-certfile ${sec.certFile} (signed by a CA etcd trusts?): ` +
          `${state.endpoint} closed the connection right after the TLS handshake on ${state.drops} attempts in a row (${text.slice(0, 160)})`,
      );
    }
    // An etcd that takes connections and never finishes TLS (hung) leaves
    // each attempt's socket open (below), and it may hang for days: after
    // this many in a row (about 6 minutes with the defaults) the endpoint
    // is no longer tried, and with none left the check stops; the subnet
    // manager's own client goes on trying and reporting.
    if (state.deadlines >= maxDeadlines) {
      live = live.filter((s) => s !== state);
      continue;
    }
    onRetry?.(text, attempt);
    // A server that takes the connection and never finishes TLS (a hung
    // etcd) costs a socket per attempt: grpc-js has no handshake timeout and
    // close() leaves a pending handshake to the server. From the second
    // deadline in a row (one is a loaded host as often as not) the attempts
    // are spaced out further, up to 12 times the usual interval.
    const { deadlines } = state;
    const wait = deadlines > 1 ? maxRetryMs * 2 ** Math.min(deadlines - 2, 4) : retryMs * 2 ** Math.min(attempt - 1, 16);
    await pause(Math.min(wait, deadlines > 1 ? 12 * maxRetryMs : maxRetryMs), signal);
  }
  return false;
}
