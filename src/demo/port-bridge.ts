// Carries TCP between network namespaces through a Unix socket, which any
// namespace can reach through the file system. The cluster's etcd listens
// on 127.0.0.1 in the root namespace; each node namespace gets a listener on
// its own 127.0.0.1:2379 that leads there, so agents use an ordinary
// loopback endpoint, as they would with a local etcd.
import { createServer, connect, type Server } from 'node:net';
import type { Duplex } from 'node:stream';

/** Joins two connections both ways (exported for its test). */
export function pipe(a: Duplex, b: Duplex): void {
  // When one side ends, pipe() ends the other once what is queued for it is
  // written. Destroying the other side on a clean close instead threw away
  // whatever it still had queued: the tail of an API server's answer, cut
  // off whenever its reader was slower than the server (a 300 KB Node list
  // to a busy agent), which then waited for the rest forever.
  a.pipe(b);
  b.pipe(a);
  // A reset loses the stream anyway: drop both sides at once.
  const fail = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', fail);
  b.on('error', fail);
  a.on('close', (hadError?: boolean) => (hadError ? fail() : b.end()));
  b.on('close', (hadError?: boolean) => (hadError ? fail() : a.end()));
}

/** Root side: a Unix socket whose connections go to host:port. */
export function bridgeUnixToTcp(socketPath: string, host: string, port: number): Promise<Server> {
  const server = createServer((client) => pipe(client, connect(port, host)));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

/** Node side: host:port in this namespace whose connections go to the Unix socket. */
export function bridgeTcpToUnix(host: string, port: number, socketPath: string): Promise<Server> {
  const server = createServer((client) => pipe(client, connect(socketPath)));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

// Run as a process inside a node netns: node port-bridge.js <host> <port> <socket>
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '\0')) {
  const [host, port, socketPath] = process.argv.slice(2);
  bridgeTcpToUnix(host, Number(port), socketPath).then(
    () => process.stdout.write('ready\n'),
    (err: Error) => {
      process.stderr.write(`port-bridge: ${err.message}\n`);
      process.exit(1);
    },
  );
}
