// Typed netlink API over vishvananda/netlink. Callers never see JSON,
// pointers or the FFI binding; kernel errors arrive as NetlinkError.
export * from './types.js';
export * from './errors.js';
export * from './links.js';
export * from './addrs.js';
export * from './routes.js';
export * from './neighbours.js';
export * from './system.js';
export * from './batch.js';
export * from './pod.js';
export { closeSocket, listenWaiter, peerClosed, pollIn, preloadShim, shutdownSocket, traceShimCalls, unixAccept, unixListen, type ListenWaiter, type ShimCallTrace } from './ffi.js';
