// A worker thread of bench/lib/cni-serving-server.js: runs the plugin
// handler for calls the event loop posts, or (workerData.listen) listens on
// the socket and serves each connection from accept to answer itself.
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';

const mod = (p) => import(pathToFileURL(join(workerData.repoRoot, 'build', p)).href);
const { handleCni, preloadHandler } = await mod('plugin/handler.js');
const { FrameReader, decodeRequest, encodeResponse } = await mod('daemon/cni-frame.js');
const { libcPeerCred } = await mod('netlink/ffi.js');
await preloadHandler();

if (workerData.listen) {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    if (libcPeerCred(socket._handle.fd)?.uid !== 0) return socket.destroy();
    const reader = new FrameReader();
    socket.on('data', (chunk) => {
      const body = reader.push(chunk);
      if (body === undefined) return;
      const req = decodeRequest(body);
      void handleCni({ env: req.env, stdin: req.stdin }).then((res) => socket.end(encodeResponse(res)));
    });
  });
  server.listen(workerData.listen, () => parentPort.postMessage({ ready: true }));
} else {
  parentPort.on('message', (msg) => {
    void handleCni({ env: msg.env, stdin: msg.stdin }).then((res) =>
      parentPort.postMessage({ id: msg.id, stdout: res.stdout, exitCode: res.exitCode, stderr: res.stderr }),
    );
  });
  parentPort.postMessage({ ready: true });
}
