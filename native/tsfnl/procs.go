package main

import (
	"os"
	"runtime"
)

// The shim runs one Go scheduler thread (P) unless GOMAXPROCS says
// otherwise. Its Go code is netlink and file I/O entered through cgo from
// a few host threads (Node's main thread, the agent's CNI workers), each
// call short and after an idle moment; it has no work to spread over
// cores. With a P per core, every such entry and every syscall exit woke
// idle Ps' threads to spin for work and kept the runtime's monitor thread
// (sysmon) polling: on a 2-core VM one P took the agent's context switches
// per pod call from ~92 to ~43 and its CPU per pod call down by 1.4-2.3 ms
// (docs/benchmarks.md). Blocking syscalls still overlap: the runtime's
// monitor hands the P of a thread blocked in the kernel to a waiting caller.
//
// What one P asks of the rest of the shim: no goroutine may compute in the
// background while a caller could be waiting for the P (the nexthop cache is
// built by the batch that needs it, nexthop.go); the shim's other goroutines
// only wait in the kernel (a netns entry's thread, a link delete and its
// watch, a held flock), which hands the P on.
func init() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
