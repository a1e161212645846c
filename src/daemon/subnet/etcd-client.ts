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

/**
 * Reads `key` with these settings. Throws EtcdAccessError for settings that
 * retrying cannot fix; other failures (etcd not up yet) resolve to false so
 * the caller's usual retries go on. A slow first connection (a loaded host)
 * can end in a bare deadline before the TLS verdict arrives, so an
 * unexplained failure is tried again, up to `attempts` times.
 */
export async function checkEtcdAccess(endpoints: string[], sec: EtcdSecurity, key: string, timeoutMs = 5000, attempts = 3): Promise<boolean> {
  const options = etcdClientOptions(endpoints, sec);
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const client = new Etcd3({
      ...options,
      dialTimeout: timeoutMs,
      defaultCallOptions: () => ({ deadline: Date.now() + timeoutMs }),
    });
    try {
      await client.get(key).string();
      return true;
    } catch (err) {
      const problem = describeAccessError(err, sec);
      if (problem) throw new EtcdAccessError(problem);
      // refused outright: etcd is not there yet, nothing more to learn now
      if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(messages(err))) return false;
    } finally {
      client.close();
    }
    if (attempt < attempts) await new Promise((r) => setTimeout(r, 250 * attempt));
  }
  return false;
}
