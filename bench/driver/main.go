// The benchmarks' process driver: a long-lived process inside a node netns
// (started by bench/lib/ns-driver.js through `ip netns exec`) that runs and
// times the processes under test there, as a container runtime would.
//
// Why Go: containerd, CRI-O and podman are Go programs, and Go's os/exec
// starts a child with clone(CLONE_VM|CLONE_VFORK), so the child shares its
// parent's memory until execve. Node's child_process forks instead, and the
// child pays for copying (then dropping) the page tables of a whole Node
// heap before its execve: about 0.8 ms of CPU per call charged to every
// plugin under test, 8 ms with a 300 MB parent, which no runtime charges.
// A child's CPU time here is its own rusage (microseconds), not a
// difference of 10 ms clock ticks.
//
// Protocol (as bench/lib/ns-driver-child.js had it): one JSON request per
// stdin line, {id, jobs, concurrency}, answered by one JSON line
// {id, results, wallMs, cpuMs} or {id, error}; batches never overlap.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

type job struct {
	Cmd   string            `json:"cmd"`
	Args  []string          `json:"args"`
	Env   map[string]string `json:"env"`
	Stdin string            `json:"stdin"`
	Cwd   string            `json:"cwd"`
}

type request struct {
	ID          int   `json:"id"`
	Jobs        []job `json:"jobs"`
	Concurrency int   `json:"concurrency"`
}

type result struct {
	Ms     float64  `json:"ms"`
	Code   *int     `json:"code"`
	Signal *string  `json:"signal"`
	Stdout string   `json:"stdout"`
	Stderr string   `json:"stderr"`
	CPUMs  *float64 `json:"cpuMs,omitempty"`
}

type reply struct {
	ID      int      `json:"id"`
	Results []result `json:"results,omitempty"`
	WallMs  float64  `json:"wallMs"`
	CPUMs   float64  `json:"cpuMs"`
	Error   string   `json:"error,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func tvMs(tv syscall.Timeval) float64 { return float64(tv.Sec)*1e3 + float64(tv.Usec)/1e3 }

// environ is the job's environment, or the driver's own when it gives none
// (as child_process.spawn does).
func environ(env map[string]string) []string {
	if env == nil {
		return os.Environ()
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// run times one process from just before its start to its exit with its
// output drained; cpu is its user + system time.
func run(j job) (result, float64) {
	cmd := exec.Command(j.Cmd, j.Args...)
	cmd.Env = environ(j.Env)
	cmd.Dir = j.Cwd
	cmd.Stdin = strings.NewReader(j.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{Ms: ms(time.Since(start))}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		// could not start (no such file, not executable): as spawn's 'error', a failed job
		code := -1
		r.Code = &code
		r.Stderr = err.Error()
		return r, 0
	}
	st := cmd.ProcessState
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := signalName(ws.Signal())
		r.Signal = &name
	} else {
		code := st.ExitCode()
		r.Code = &code
	}
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	cpu := 0.0
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		cpu = tvMs(ru.Utime) + tvMs(ru.Stime)
	}
	return r, cpu
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

// runPool runs the jobs with at most `concurrency` in flight, in order;
// with one at a time each result carries its own CPU time.
func runPool(req request) reply {
	n := len(req.Jobs)
	results := make([]result, n)
	cpus := make([]float64, n)
	callers := req.Concurrency
	if callers < 1 {
		callers = 1
	}
	if callers > n {
		callers = n
	}
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], cpus[i] = run(req.Jobs[i])
			}
		}()
	}
	wg.Wait()
	out := reply{ID: req.ID, Results: results, WallMs: ms(time.Since(start))}
	for i := range cpus {
		out.CPUMs += cpus[i]
		if req.Concurrency <= 1 {
			c := cpus[i]
			results[i].CPUMs = &c
		}
	}
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		line := bytes.TrimSpace(in.Bytes())
		if len(line) == 0 {
			continue
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			_ = enc.Encode(reply{ID: req.ID, Error: err.Error()})
			continue
		}
		_ = enc.Encode(runPool(req))
	}
}
