// A worker thread of bench/lib/cni-serving-server.js: runs the plugin
// handler for calls the event loop posts, or (workerData.listen) listens on
// the socket and serves each connection from accept to answer itself.
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { connectionHandler } from './cni-serving-conn.js';

const mod = (p) => import(pathToFileURL(join(workerData.repoRoot, 'build', p)).href);
const { handleCni, preloadHandler } = await mod('plugin/handler.js');
const { FrameReader, decodeRequest, encodeResponse } = await mod('daemon/cni-frame.js');
const { libcPeerCred } = await mod('netlink/ffi.js');
await preloadHandler();

if (workerData.listenFd !== undefined) {
  const { accept, peerUid, readFrame, writeAll, closeFd } = await import('./cni-serving-libc.js');
  parentPort.postMessage({ ready: true });
  // Blocks this thread in accept(2) between calls; its event loop runs only
  // inside a call (the handler's awaits).
  for (;;) {
    const fd = accept(workerData.listenFd);
    try {
      if (peerUid(fd) !== 0) continue;
      const body = readFrame(fd);
      if (!body) continue;
      const req = decodeRequest(body);
      const res = await handleCni({ env: req.env, stdin: req.stdin });
      writeAll(fd, encodeResponse(res));
    } finally {
      closeFd(fd);
    }
  }
} else if (workerData.listen) {
  const serve = (env, stdin) => handleCni({ env, stdin });
  const server = createServer({ allowHalfOpen: true }, connectionHandler({ FrameReader, decodeRequest, encodeResponse, libcPeerCred }, serve));
  server.listen(workerData.listen, () => parentPort.postMessage({ ready: true }));
} else {
  parentPort.on('message', (msg) => {
    void handleCni({ env: msg.env, stdin: msg.stdin }).then((res) =>
      parentPort.postMessage({ id: msg.id, stdout: res.stdout, exitCode: res.exitCode, stderr: res.stderr }),
    );
  });
  parentPort.postMessage({ ready: true });
}
