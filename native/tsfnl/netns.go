package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netlinkTimeout bounds every send and receive on a netlink socket, so a call
// stuck behind RTNL contention (or a kernel that never answers) becomes an
// EAGAIN error instead of a thread of the agent hung forever. It is far above
// any healthy netlink round trip and below the forwarder's 55 s deadline.
const netlinkTimeout = 20 * time.Second

func init() {
	// The package-level sockets (opened per request when no handle is given)
	// default to 60 s; align them with the handles.
	_ = netlink.SetSocketTimeout(netlinkTimeout)
}

// nsResult carries a value back from the throw-away thread.
type nsResult[T any] struct {
	v   T
	err error
}

// inNetns runs fn on a throw-away OS thread that has joined the netns at
// path, and waits for it. It is the only place the shim calls setns.
//
// Why: the shim is called through cgo, so the calling thread is the host
// process's own thread (Node's main thread in the agent). Entering a netns
// there, as netlink.NewHandleAt does, leaves that thread (and every socket
// the process opens on it later) in the pod's namespace if switching back
// fails, which vishvananda's helper ignores. Here the goroutine locks its
// thread and never unlocks it, so the Go runtime terminates the thread when
// the goroutine ends instead of reusing it. (A locked cgo caller never runs
// other goroutines, and since Go 1.10 new threads are cloned from a clean
// template thread, so neither can inherit the pod's namespace.)
//
// The thread still moves back to its own netns before it ends: in a
// c-shared library the runtime's first thread (m0) is parked for good
// instead of exiting when a locked goroutine ends on it, and a parked thread
// left in the pod's netns would keep that namespace (and the pod's veth)
// alive after the runtime deleted it. If moving back fails, nothing is lost:
// the thread is discarded (or parked) and never runs Go code again.
func inNetns[T any](path string, fn func() (T, error)) (T, error) {
	if path == "" {
		return fn()
	}
	return onThrowAwayThread(path, func() nsResult[T] { return enterAndRun(path, fn) })
}

// inNetnsFd is inNetns for a namespace the caller already opened (and
// checked), so one open descriptor serves the check, the entry and, for a
// veth, the peer's IFLA_NET_NS_FD. label names it in errors.
func inNetnsFd[T any](target netns.NsHandle, label string, fn func() (T, error)) (T, error) {
	return onThrowAwayThread(label, func() nsResult[T] { return enterFdAndRun(target, label, fn) })
}

// onThrowAwayThread runs work on a new goroutine that locks its OS thread
// for good (see inNetns) and waits for its result.
func onThrowAwayThread[T any](label string, work func() nsResult[T]) (T, error) {
	ch := make(chan nsResult[T], 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see inNetns
		// dispatch's recover guards only the caller's goroutine; a panic
		// here would otherwise kill the host process.
		defer func() {
			if p := recover(); p != nil {
				ch <- nsResult[T]{err: fmt.Errorf("panic in netns %s: %v\n%s", label, p, debug.Stack())}
			}
		}()
		ch <- work()
	}()
	res := <-ch
	return res.v, res.err
}

// enterAndRun does the work of inNetns on the already locked thread.
func enterAndRun[T any](path string, fn func() (T, error)) (res nsResult[T]) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		res.err = fmt.Errorf("open netns %s: %w", path, err)
		return res
	}
	defer target.Close()
	return enterFdAndRun(target, path, fn)
}

// enterFdAndRun switches the locked thread into target, runs fn, and moves
// the thread back (best effort: see inNetns).
func enterFdAndRun[T any](target netns.NsHandle, label string, fn func() (T, error)) (res nsResult[T]) {
	home, err := netns.Get()
	if err != nil {
		res.err = fmt.Errorf("open own netns: %w", err)
		return res
	}
	defer home.Close()
	if err := netns.Set(target); err != nil {
		res.err = fmt.Errorf("enter netns %s: %w", label, err)
		return res
	}
	defer func() { _ = netns.Set(home) }() // best effort, see inNetns
	res.v, res.err = fn()
	return res
}

// openHandle opens a netlink handle whose sockets belong to the netns at path
// ("" = the process's own). A netlink socket stays bound to the namespace it
// was created in, so only the socket creation needs the throw-away thread;
// the requests themselves then run on any thread.
func openHandle(path string) (*netlink.Handle, error) {
	return withSocketTimeout(inNetns(path, func() (*netlink.Handle, error) {
		h, err := netlink.NewHandle()
		if err != nil && path != "" {
			return nil, fmt.Errorf("netlink handle in %s: %w", path, err)
		}
		return h, err
	}))
}

// withSocketTimeout bounds a freshly opened handle's sockets by
// netlinkTimeout; it takes the opener's results as they come and closes the
// handle if the timeout cannot be set.
func withSocketTimeout(h *netlink.Handle, err error) (*netlink.Handle, error) {
	if err != nil {
		return nil, err
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return h, nil
}
