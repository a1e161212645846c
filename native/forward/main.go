// Command tsflannel-forward is /opt/cni/bin/tsflannel when the node agent
// serves CNI calls: it hands each call (CNI_* and TSFLANNEL_* environment and
// the stdin bytes) to tsflanneld over a Unix socket and relays the answer, so
// a pod pays a static binary's start-up instead of Node's. When the agent
// cannot answer, it execs the standalone TypeScript plugin with the same
// environment and stdin, so a pod never fails because the agent restarts.
// The wire protocol is PROTOCOL.md (4-byte big-endian length + JSON, one
// request per connection). Standard library only: it must build with
// CGO_ENABLED=0 into one small static file.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	defaultSocket = "/run/tsflannel/cni.sock"
	// maxStdin is the standalone plugin's limit; beyond it the standalone
	// answers the CNI error itself.
	maxStdin = 1 << 20
	// maxVersionStdin mirrors src/plugin/main.ts: a bigger VERSION body names
	// no version.
	maxVersionStdin = 4096
	maxFrame        = 2 << 20
	connectTimeout  = time.Second
	defaultTimeout  = 55 * time.Second
	// standaloneName is the TypeScript plugin, installed beside this binary.
	standaloneName = "tsflannel-standalone"
)

// These mirror src/cni/versions.ts; test/integration/forwarder.test.ts
// compares this binary's VERSION answers with the standalone plugin's.
var supportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

const currentVersion = "1.1.0"

func main() {
	switch os.Getenv("CNI_COMMAND") {
	case "VERSION":
		// podman asks before every ADD and DEL: answer without the agent.
		answerVersion()
		return
	case "":
		// A person running `tsflannel status`: the standalone is the node tool.
		execStandalone(nil, "")
	}
	stdin, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdin+1))
	if err != nil {
		// Leave fd 0 as it is, so the standalone meets the same read error
		// and reports it the way it always does.
		execStandalone(nil, "")
	}
	if len(stdin) > maxStdin {
		// The standalone answers the size error; it needs only to see more
		// than the limit, not the whole stream.
		execStandalone(stdin, "")
	}
	conf := topLevel(stdin)
	path := socketPath(conf)
	if path == "" {
		execStandalone(stdin, "") // agentSocket "": never forward
	}
	ans, reason := forward(path, stdin, timeout())
	if ans == nil {
		fmt.Fprintf(os.Stderr, "tsflannel: agent at %s unavailable (%s), running standalone\n", path, reason)
		recordFallback(path, reason)
		execStandalone(stdin, path)
	}
	os.Stdout.Write(ans.Stdout)
	os.Stderr.WriteString(ans.Stderr)
	os.Exit(ans.ExitCode)
}

// answerVersion prints exactly what the standalone prints: the requested
// cniVersion if supported, else the current one, and every supported version.
func answerVersion() {
	body, err := io.ReadAll(io.LimitReader(os.Stdin, maxVersionStdin+1))
	requested := ""
	if err == nil && len(body) > 0 && len(body) <= maxVersionStdin {
		requested = stringField(topLevel(body), "cniVersion")
	}
	out, _ := json.Marshal(struct {
		CniVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}{answerVersionFor(requested), supportedVersions})
	os.Stdout.Write(append(out, '\n'))
}

func answerVersionFor(requested string) string {
	for _, v := range supportedVersions {
		if v == requested {
			return v
		}
	}
	return currentVersion
}

// topLevel decodes a JSON object's members without interpreting them; nil
// when the body is not a JSON object. A map (not a struct) keeps key matching
// exact, as in JavaScript, where Go's struct decoding ignores case.
func topLevel(body []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	return m
}

// stringField is m[key] when it is a JSON string, else "".
func stringField(m map[string]json.RawMessage, key string) string {
	raw, ok := m[key]
	var s string
	if !ok || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// socketPath is the conf's agentSocket: missing (or stdin not a JSON object)
// means the default; "" means never forward. A non-string value is left to
// the handler's validation, behind the default socket.
func socketPath(conf map[string]json.RawMessage) string {
	raw, ok := conf["agentSocket"]
	if !ok {
		return defaultSocket
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return defaultSocket
	}
	return s
}

// timeout is TSFLANNEL_FORWARD_TIMEOUT_MS, below kubelet's own deadline for a
// CNI call, so a stuck agent still leaves time for the standalone.
func timeout() time.Duration {
	ms, err := strconv.Atoi(os.Getenv("TSFLANNEL_FORWARD_TIMEOUT_MS"))
	if err != nil || ms <= 0 {
		return defaultTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

type request struct {
	V     int               `json:"v"`
	Env   map[string]string `json:"env"`
	Stdin []byte            `json:"stdin"` // encoding/json writes []byte as base64
}

type answer struct {
	V        int     `json:"v"`
	Stdout   []byte  `json:"stdout"`
	ExitCode *int    `json:"exitCode"`
	Stderr   *string `json:"stderr"`
}

// forwardedEnv is every CNI_* and TSFLANNEL_* variable, nothing else: the
// agent must not see (or act on) the runtime's unrelated environment.
func forwardedEnv() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !(strings.HasPrefix(k, "CNI_") || strings.HasPrefix(k, "TSFLANNEL_")) {
			continue
		}
		if _, dup := env[k]; !dup { // the first wins, as in getenv(3)
			env[k] = v
		}
	}
	return env
}

type relay struct {
	Stdout   []byte
	Stderr   string
	ExitCode int
}

// forward sends one request and reads one answer. A nil relay means the agent
// did not answer completely and well-formed; reason says why, for the log.
func forward(path string, stdin []byte, limit time.Duration) (*relay, string) {
	frame, err := json.Marshal(request{V: 1, Env: forwardedEnv(), Stdin: stdin})
	if err != nil {
		return nil, "encoding the request: " + err.Error()
	}
	conn, err := dial(path)
	if err != nil {
		return nil, dialReason(err)
	}
	defer conn.Close()
	if reason := checkAgent(conn); reason != "" {
		return nil, reason
	}
	conn.SetDeadline(time.Now().Add(limit))
	head := make([]byte, 4)
	binary.BigEndian.PutUint32(head, uint32(len(frame)))
	if _, err := conn.Write(append(head, frame...)); err != nil {
		return nil, ioReason("sending the request", err, limit)
	}
	if _, err := io.ReadFull(conn, head); err != nil {
		return nil, ioReason("reading the answer", err, limit)
	}
	n := binary.BigEndian.Uint32(head)
	if n > maxFrame {
		return nil, fmt.Sprintf("answer frame of %d bytes is over the %d limit", n, maxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, ioReason("reading the answer", err, limit)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, "malformed answer: " + err.Error()
	}
	if a.V != 1 || a.ExitCode == nil || *a.ExitCode < 0 || *a.ExitCode > 255 {
		return nil, "malformed answer: wrong version or exit code"
	}
	r := &relay{Stdout: a.Stdout, ExitCode: *a.ExitCode}
	if a.Stderr != nil {
		r.Stderr = *a.Stderr
	}
	return r, ""
}

// dial connects within connectTimeout. A Unix socket whose listen backlog is
// full fails a (non-blocking) connect with EAGAIN at once rather than waiting,
// so a busy agent gets retried until the timeout instead of being given up
// on within microseconds.
func dial(path string) (net.Conn, error) {
	deadline := time.Now().Add(connectTimeout)
	for {
		conn, err := net.DialTimeout("unix", path, time.Until(deadline))
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			return conn, err
		}
		if time.Now().Add(10 * time.Millisecond).After(deadline) {
			return nil, errBusy
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errBusy = errors.New("busy")

// checkAgent refuses a server that is neither root nor this process's own
// user: the call carries the pod's configuration and its answer becomes the
// pod's network, so a socket someone else managed to bind (agentSocket in a
// writable directory) must not be trusted. For a client, SO_PEERCRED holds
// the credentials of the process that called listen(2).
func checkAgent(conn net.Conn) string {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return "not a Unix socket"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "reading the agent's credentials: " + err.Error()
	}
	var cred *syscall.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return "reading the agent's credentials: " + err.Error()
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Sprintf("the process listening there runs as uid %d, not root", cred.Uid)
	}
	return ""
}

func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "no socket"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied"
	case err == errBusy, isTimeout(err):
		return fmt.Sprintf("no connection within %s", connectTimeout)
	}
	return err.Error()
}

func ioReason(what string, err error, limit time.Duration) string {
	switch {
	case isTimeout(err):
		return fmt.Sprintf("no answer within %d ms", limit.Milliseconds())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// EOF, or a reset/broken pipe when the agent died with our request
		// still unread: the same event for the caller.
		return "connection closed before a complete answer"
	}
	return what + ": " + err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fallbackLog is kept beside the socket; `tsflannel status` reads it, since
// the agent never sees the calls that bypassed it.
const fallbackLog = "fallbacks.log"

// maxFallbackLog bounds the log in /run (memory): past it the log moves to
// fallbacks.log.1, replacing the older one.
const maxFallbackLog = 256 << 10

// recordFallback appends one JSON line about a call that bypassed the agent
// to fallbacks.log in the socket's directory, if that directory exists (it
// is the agent's: never created here). Best effort: the pod comes first.
func recordFallback(socket, reason string) {
	dir := filepath.Dir(socket)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return
	}
	path := filepath.Join(dir, fallbackLog)
	if st, err := os.Stat(path); err == nil && st.Size() > maxFallbackLog {
		os.Rename(path, path+".1")
	}
	line, err := json.Marshal(map[string]string{
		"time":        time.Now().UTC().Format(time.RFC3339Nano),
		"command":     os.Getenv("CNI_COMMAND"),
		"containerId": os.Getenv("CNI_CONTAINERID"),
		"ifname":      os.Getenv("CNI_IFNAME"),
		"socket":      socket,
		"reason":      reason,
	})
	if err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	// One write of one line: O_APPEND keeps concurrent forwarders' lines whole.
	f.Write(append(line, '\n'))
	f.Close()
}

// standalonePath is TSFLANNEL_STANDALONE, else tsflannel-standalone in this
// executable's own directory (where `tsflannel install` puts both).
func standalonePath() string {
	if p := os.Getenv("TSFLANNEL_STANDALONE"); p != "" {
		return p
	}
	self, err := os.Executable()
	if err != nil {
		return "/opt/cni/bin/" + standaloneName
	}
	return filepath.Join(filepath.Dir(self), standaloneName)
}

// execStandalone replaces this process with the standalone plugin, with the
// same arguments and environment. With stdin bytes, its fd 0 becomes a memory
// file holding exactly those bytes (a pipe would block beyond 64 KiB with no
// one left to drain it); with nil, fd 0 is passed on untouched. agent names
// the socket that failed, for the error when the standalone is missing too.
func execStandalone(stdin []byte, agent string) {
	path := standalonePath()
	err := syscall.Access(path, 1 /* X_OK */)
	if err == nil && stdin != nil {
		err = stdinFrom(stdin)
	}
	if err == nil {
		err = syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
	}
	if os.Getenv("CNI_COMMAND") == "" {
		fmt.Fprintf(os.Stderr, "tsflannel: cannot run the standalone plugin %s: %v\n", path, err)
		os.Exit(1)
	}
	msg := fmt.Sprintf("tsflannel: cannot run the standalone plugin %s: %v", path, err)
	if agent != "" {
		msg = fmt.Sprintf("tsflannel: agent at %s unavailable and standalone plugin %s not runnable: %v", agent, path, err)
	}
	out, _ := json.Marshal(struct {
		CniVersion string `json:"cniVersion"`
		Code       int    `json:"code"`
		Msg        string `json:"msg"`
	}{answerVersionFor(stringField(topLevel(stdin), "cniVersion")), 999, msg})
	os.Stdout.Write(append(out, '\n'))
	os.Exit(1)
}

// stdinFrom puts data behind fd 0: a memfd (no filesystem needed), or an
// unlinked temporary file where memfd_create is unknown.
func stdinFrom(data []byte) error {
	f, err := memFile()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// dup3 without O_CLOEXEC: the copy on fd 0 survives exec; f itself
	// (close-on-exec, like every fd Go opens) does not.
	return syscall.Dup3(int(f.Fd()), 0, 0)
}

func memFile() (*os.File, error) {
	if sysMemfdCreate > 0 {
		name := []byte("tsflannel-stdin\x00")
		const mfdCloexec = 1
		fd, _, errno := syscall.Syscall(sysMemfdCreate, uintptr(unsafe.Pointer(&name[0])), mfdCloexec, 0)
		if errno == 0 {
			return os.NewFile(fd, "memfd:tsflannel-stdin"), nil
		}
	}
	f, err := os.CreateTemp("", "tsflannel-stdin-")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}
