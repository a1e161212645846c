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
// polling: measured on a 2-core VM (docs/benchmarks.md), one P took the
// agent's context switches per pod call from ~95 to ~45, the monitor's
// sleeps from ~55 to ~12, and its CPU per ADD and DEL by about 1.4 ms,
// with the same throughput for 10 concurrent callers. Blocking syscalls
// still overlap: a P blocked in one is handed to the next caller.
func init() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
