// One CNI connection as the serving designs of bench/cni-serving.js handle
// it: refuse a non-root peer, read one request frame, answer with what
// `run` resolves to. `mods` are build/daemon/cni-frame.js and
// build/netlink/ffi.js, loaded by the caller from the repository it tests.
export function connectionHandler(mods, run) {
  const { FrameReader, decodeRequest, encodeResponse, libcPeerCred } = mods;
  return (socket) => {
    if (libcPeerCred(socket._handle.fd)?.uid !== 0) return socket.destroy();
    const reader = new FrameReader();
    socket.on('data', (chunk) => {
      const body = reader.push(chunk);
      if (body === undefined) return;
      const req = decodeRequest(body);
      void run(req.env, req.stdin).then((res) => socket.end(encodeResponse(res)));
    });
  };
}
