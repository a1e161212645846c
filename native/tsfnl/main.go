// Package main is tsflannel's netlink shim: a C-shared library over
// vishvananda/netlink. Its C surface is deliberately two functions:
//
//	char *TsfCall(char *op, char *request_json)  -> malloc'ed JSON reply
//	void  TsfFree(char *reply)
//
// Every reply is {"ok":true,"result":...} or
// {"ok":false,"error":"...","errno":"EEXIST","code":17}, so the TypeScript
// side can turn kernel errors into typed errors and stay idempotent.
package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"syscall"
	"unsafe"
)

// ShimVersion is bumped whenever an op's request or reply shape changes, so a
// stale .so next to newer TypeScript is detected at load time.
const ShimVersion = 9

type reply struct {
	OK     bool        `json:"ok"`
	Result interface{} `json:"result,omitempty"`
	Error  string      `json:"error,omitempty"`
	Errno  string      `json:"errno,omitempty"`
	Code   int         `json:"code,omitempty"`
	// Reason tags a failure the caller maps to a specific error (pod ops).
	Reason string `json:"reason,omitempty"`
	// Stack is a panic's Go stack: for a debug log, never for an error message.
	Stack string `json:"stack,omitempty"`
}

type opFunc func(raw []byte) (interface{}, error)

var ops = map[string]opFunc{
	"version":          func([]byte) (interface{}, error) { return map[string]int{"version": ShimVersion}, nil },
	"link.get":         opLinkGet,
	"link.list":        opLinkList,
	"link.del":         opLinkDel,
	"link.set":         opLinkSet,
	"bridge.add":       opBridgeAdd,
	"veth.add":         opVethAdd,
	"vxlan.add":        opVxlanAdd,
	"wireguard.add":    opWireguardAdd,
	"addr.add":         opAddrChange("add"),
	"addr.replace":     opAddrChange("replace"),
	"addr.del":         opAddrChange("del"),
	"addr.list":        opAddrList,
	"route.add":        opRouteChange("add"),
	"route.replace":    opRouteChange("replace"),
	"route.del":        opRouteChange("del"),
	"route.list":       opRouteList,
	"neigh.set":        opNeighChange("set"),
	"neigh.del":        opNeighChange("del"),
	"neigh.list":       opNeighList,
	"fdb.append":       opFdbChange("append"),
	"fdb.del":          opFdbChange("del"),
	"fdb.list":         opFdbList,
	"sysctl.get":       opSysctlGet,
	"sysctl.set":       opSysctlSet,
	"netns.check":      opNetnsCheck,
	"flock":            opFlock,
	"sock.peercred":    opPeerCred,
	"batch.apply":      opBatchApply,
	"state.dump":       opStateDump,
	"state.dump.start": opStateDumpStart,
	"state.dump.wait":  opStateDumpWait,
	"nexthop.flush":    opNexthopFlush,
	"pod.inspect":      opPodInspect,
	"pod.setup":        opPodSetup,
	"pod.teardown":     opPodTeardown,
}

func main() {}

//export TsfCall
func TsfCall(cop *C.char, creq *C.char) *C.char {
	op := C.GoString(cop)
	req := []byte(C.GoString(creq))
	return C.CString(string(encode(dispatch(op, req))))
}

//export TsfFree
func TsfFree(p *C.char) {
	C.free(unsafe.Pointer(p))
}

func dispatch(op string, req []byte) (r reply) {
	// A panic must never cross the C boundary: it would kill the node process
	// with a Go stack trace instead of a CNI error.
	defer func() {
		if p := recover(); p != nil {
			r = reply{Error: fmt.Sprintf("panic in %s: %v", op, p), Stack: string(debug.Stack())}
		}
	}()
	fn, found := ops[op]
	if !found {
		return reply{Error: "unknown op " + op, Errno: "ENOSYS", Code: int(syscall.ENOSYS)}
	}
	res, err := fn(req)
	if err != nil {
		return errorReply(err)
	}
	return reply{OK: true, Result: res}
}

func errorReply(err error) reply {
	r := reply{Error: err.Error()}
	var pe *podError
	if errors.As(err, &pe) {
		r.Reason = pe.reason
	}
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		r.Errno, r.Code = errnoName(errno), int(errno)
	case isLinkNotFound(err):
		r.Errno, r.Code = "ENOENT", int(syscall.ENOENT)
	}
	return r
}

func encode(r reply) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(reply{Error: "encoding reply: " + err.Error()})
	}
	return b
}

func decode(raw []byte, v interface{}) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("bad request: %w", syscall.EINVAL)
	}
	return nil
}

var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.ESRCH: "ESRCH",
	syscall.EINTR: "EINTR", syscall.EIO: "EIO", syscall.EBADF: "EBADF",
	syscall.EAGAIN: "EAGAIN", syscall.ENOMEM: "ENOMEM", syscall.EACCES: "EACCES",
	syscall.EBUSY: "EBUSY", syscall.EEXIST: "EEXIST", syscall.ENODEV: "ENODEV",
	syscall.ENOTDIR: "ENOTDIR", syscall.EINVAL: "EINVAL", syscall.ENOSPC: "ENOSPC",
	syscall.ERANGE: "ERANGE", syscall.ENOSYS: "ENOSYS", syscall.EOPNOTSUPP: "EOPNOTSUPP",
	syscall.EADDRINUSE: "EADDRINUSE", syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL",
	syscall.ENETUNREACH: "ENETUNREACH", syscall.ENOBUFS: "ENOBUFS",
	syscall.EAFNOSUPPORT: "EAFNOSUPPORT", syscall.EPROTONOSUPPORT: "EPROTONOSUPPORT",
	syscall.ENOTSOCK: "ENOTSOCK", syscall.ENOTCONN: "ENOTCONN",
}

func errnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("ERRNO%d", int(e))
}
