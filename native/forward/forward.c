/*
 * tsflannel-forward: /opt/cni/bin/tsflannel when the node agent serves CNI
 * calls. It hands each call (the CNI_* and TSFLANNEL_* environment and the
 * stdin bytes) to tsflanneld over a Unix socket and relays the answer, so a
 * pod pays a static C program's start-up (well under a millisecond of CPU)
 * instead of Node's. When the agent cannot answer, it execs the standalone
 * TypeScript plugin with the same environment (less the variables Node acts
 * on at start-up: node_startup_var) and stdin, so a pod never fails because
 * the agent restarts. Wire protocol: docs/architecture-cni-path.md
 * (4-byte big-endian length + JSON, one request per connection).
 *
 * Its JSON reading and writing (json.c) follow Go's encoding/json (the
 * language of the first forwarder) where a caller could see a difference:
 * which documents are
 * valid (depth limit 10000), how strings decode (invalid UTF-8 and lone
 * surrogates become U+FFFD), the case-insensitive field names of the answer,
 * the escaping of what it writes, and the error texts in fallback reasons.
 *
 * One-shot process: memory is released by exit. Every buffer is bounded:
 * stdin by 1 MiB + 1, the answer by its 2 MiB frame limit, the request by the
 * environment and stdin it encodes. No recursion: JSON nesting is tracked
 * with an explicit stack of at most 10000 levels.
 */
#define _GNU_SOURCE
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_SOCKET "/run/tsflannel/cni.sock"
/* sun_path's 108 bytes less the NUL, as src/plugin/config.ts bounds agentSocket. */
#define MAX_SOCKET_PATH 107u
/* The standalone plugin's limit; beyond it the standalone answers the error. */
#define MAX_STDIN (1u << 20)
/* src/plugin/main.ts: a bigger VERSION body names no version. */
#define MAX_VERSION_STDIN 4096u
#define MAX_FRAME (2u << 20)
#define CONNECT_TIMEOUT_NS 1000000000LL
#define DEFAULT_TIMEOUT_MS 55000LL
#define STANDALONE_NAME "tsflannel-standalone"
#define FALLBACK_LOG "fallbacks.log"
/* The log lives in /run (memory): past this it moves to fallbacks.log.1. */
#define MAX_FALLBACK_LOG (256 << 10)

/* Mirror src/cni/versions.ts; test/integration/forwarder.test.ts compares
 * this binary's VERSION answers with the standalone plugin's. */
static const char *const supported_versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_VERSIONS (sizeof supported_versions / sizeof supported_versions[0])
static const char current_version[] = "1.1.0";

static int g_argc;
static char **g_argv;

/* ------------------------------------------------------------------- I/O */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Writes all of p to fd (EINTR, partial writes and a non-blocking fd handled). */
static int write_all(int fd, const void *p, size_t n) {
  const unsigned char *s = p;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return -1;
        continue;
      }
      return -1;
    }
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads fd 0 until EOF or until more than max bytes; 0, or -1 on a read error. */
static int read_stdin(buf *b, size_t max) {
  for (;;) {
    if (b->n > max) return 0;
    size_t want = max + 1 - b->n;
    if (want > 65536) want = 65536;
    buf_reserve(b, want);
    ssize_t r = read(0, b->p + b->n, want);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { /* a non-blocking stdin: wait for it */
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return -1;
        continue;
      }
      return -1;
    }
    if (r == 0) return 0;
    b->n += (size_t)r;
    b->p[b->n] = 0;
  }
}

/* Go's texts for errno values are glibc's with a lower-case first letter. */
static void errno_text(buf *b, int e) {
  const char *s = strerror(e);
  size_t at = b->n;
  buf_str(b, s);
  if (b->n > at && b->p[at] >= 'A' && b->p[at] <= 'Z') b->p[at] = (unsigned char)(b->p[at] + 32);
}

/* ------------------------------------------------------------- paths */

/* Go's filepath.Clean. */
static void path_clean(buf *out, const char *p) {
  size_t n = strlen(p), r = 0, dotdot = 0;
  int rooted = n > 0 && p[0] == '/';
  out->n = 0;
  if (rooted) { buf_ch(out, '/'); r = 1; dotdot = 1; }
  while (r < n) {
    if (p[r] == '/') r++;
    else if (p[r] == '.' && (r + 1 == n || p[r + 1] == '/')) r++;
    else if (p[r] == '.' && p[r + 1] == '.' && (r + 2 == n || p[r + 2] == '/')) {
      r += 2;
      if (out->n > dotdot) {
        out->n--;
        while (out->n > dotdot && out->p[out->n] != '/') out->n--;
      } else if (!rooted) {
        if (out->n > 0) buf_ch(out, '/');
        buf_str(out, "..");
        dotdot = out->n;
      }
    } else {
      if ((rooted && out->n != 1) || (!rooted && out->n != 0)) buf_ch(out, '/');
      for (; r < n && p[r] != '/'; r++) buf_ch(out, (unsigned char)p[r]);
    }
  }
  if (out->n == 0) buf_ch(out, '.');
  out->p[out->n] = 0;
}

/* Go's filepath.Dir for a path of n bytes (it may hold NUL bytes: they end
 * the C string that is cleaned, and the caller checks for them). */
static void path_dir(buf *out, const char *p, size_t n) {
  size_t i = n;
  while (i > 0 && p[i - 1] != '/') i--;
  buf tmp = {0};
  buf_add(&tmp, p, i);
  path_clean(out, buf_cstr(&tmp));
  free(tmp.p);
}

static void path_join(buf *out, const char *dir, const char *name) {
  buf tmp = {0};
  buf_str(&tmp, dir);
  buf_ch(&tmp, '/');
  buf_str(&tmp, name);
  path_clean(out, buf_cstr(&tmp));
  free(tmp.p);
}

/* ------------------------------------------------------------ environment */

/* os.Environ(): the environment with later duplicates of a name dropped (the
 * first wins, as for getenv) and empty entries left out. */
static char **environ_dedup(size_t *count) {
  size_t n = 0;
  while (environ[n]) n++;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) die_oom();
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = environ[i];
    if (!*e) continue;
    const char *eq = strchr(e, '=');
    int dup = 0;
    if (eq) {
      size_t kl = (size_t)(eq - e) + 1;
      for (size_t j = 0; j < k && !dup; j++) dup = strncmp(out[j], e, kl) == 0;
    }
    if (!dup) out[k++] = environ[i];
  }
  out[k] = NULL;
  *count = k;
  return out;
}

static int env_less(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  size_t xl = strcspn(x, "="), yl = strcspn(y, "=");
  int c = memcmp(x, y, xl < yl ? xl : yl);
  return c ? c : (xl > yl) - (xl < yl);
}

static const char *env_or_empty(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

/* ------------------------------------------------------------- VERSION */

static const char *version_for(const char *requested) {
  for (size_t i = 0; requested && i < N_VERSIONS; i++)
    if (strcmp(requested, supported_versions[i]) == 0) return supported_versions[i];
  return current_version;
}

/* The requested cniVersion of a body, as string_member (NULL body: none). */
static const char *requested_version(const buf *body, buf *tmp) {
  if (!body || !body->p) return NULL;
  return string_member(body->p, body->n, "cniVersion", tmp);
}

/* Prints exactly what the standalone prints: the requested cniVersion if
 * supported, else the current one, and every supported version. */
static void answer_version(void) {
  buf body = {0}, tmp = {0}, out = {0};
  const char *requested = NULL;
  if (read_stdin(&body, MAX_VERSION_STDIN) == 0 && body.n > 0 && body.n <= MAX_VERSION_STDIN)
    requested = requested_version(&body, &tmp);
  buf_str(&out, "{\"cniVersion\":");
  json_quote_str(&out, version_for(requested));
  buf_str(&out, ",\"supportedVersions\":[");
  for (size_t i = 0; i < N_VERSIONS; i++) {
    if (i) buf_ch(&out, ',');
    json_quote_str(&out, supported_versions[i]);
  }
  buf_str(&out, "]}\n");
  write_all(1, out.p, out.n);
  exit(0);
}

/* ----------------------------------------------------------- standalone */

/*
 * Whether the standalone will run as the CNI plugin rather than the node
 * tool or the agent: src/main/dispatch.ts's programFor, mirrored (a first
 * argument naming a program wins, else argv[0]'s basename; the plugin when
 * CNI_COMMAND is set, even to "", or a runtime-style call with no arguments
 * carries CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME). test/integration/
 * forwarder.test.ts checks the two agree on 36 argument and variable cases.
 */
static int standalone_is_plugin(const char *path) {
  static const char *const programs[] = {"tsflannel", STANDALONE_NAME, "tsflanneld"};
  const char *first = g_argc > 1 ? g_argv[1] : NULL;
  int by_arg = 0;
  for (size_t i = 0; first && i < sizeof programs / sizeof programs[0]; i++) by_arg |= strcmp(first, programs[i]) == 0;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (strcmp(by_arg ? first : base, "tsflanneld") == 0) return 0;
  if (getenv("CNI_COMMAND")) return 1;
  int args = g_argc - 1 - by_arg;
  return args <= 0 && (getenv("CNI_CONTAINERID") || getenv("CNI_NETNS") || getenv("CNI_IFNAME"));
}

/*
 * The variables a CNI call's standalone plugin does not inherit from the
 * runtime (one list: docs/configuration.md#environment-variables copies it).
 * The standalone is a Node single executable, and Node, its bundled OpenSSL
 * and libuv act on these when the process starts, before any of the plugin's
 * code runs: NODE_OPTIONS adds flags (--require of any file, --inspect opening
 * a debug port per pod), NODE_EXTRA_CA_CERTS makes every start parse a CA
 * bundle (about 60 ms of CPU with Debian's), NODE_V8_COVERAGE writes files on
 * every call, OPENSSL_CONF is read at start and can load engines or
 * providers, UV_THREADPOOL_SIZE sizes a thread pool. The plugin makes no TLS
 * connection, takes no Node option and reads none of them (NODE_NAME
 * included), so whole name spaces go: NODE_* (Node's own, with the names a
 * later Node adds), OPENSSL_* and UV_*. SSL_CERT_FILE and SSL_CERT_DIR stay:
 * OpenSSL reads them only when a TLS context loads its trust store. CNI_*,
 * PATH and everything else pass unchanged.
 */
static int node_startup_var(const char *e) {
  static const char *const prefixes[] = {"NODE_", "OPENSSL_", "UV_"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(e, prefixes[i], strlen(prefixes[i])) == 0) return 1;
  return 0;
}

/* Drops node_startup_var's names from a NULL-terminated list, in place. */
static void drop_node_vars(char **env) {
  size_t k = 0;
  for (size_t i = 0; env[i]; i++)
    if (!node_startup_var(env[i])) env[k++] = env[i];
  env[k] = NULL;
}

/* This executable's path (without a " (deleted)" suffix), or -1. */
static int self_path(char self[PATH_MAX + 1]) {
  ssize_t k = readlink("/proc/self/exe", self, PATH_MAX);
  if (k <= 0) return -1;
  self[k] = 0;
  static const char deleted[] = " (deleted)";
  size_t dl = sizeof deleted - 1;
  if ((size_t)k >= dl && strcmp(self + k - dl, deleted) == 0) self[k - dl] = 0;
  return 0;
}

/* TSFLANNEL_STANDALONE, else tsflannel-standalone in this executable's own
 * directory (where `tsflannel install` puts both). */
static void standalone_path(buf *out) {
  const char *env = getenv("TSFLANNEL_STANDALONE");
  if (env && *env) { buf_str(out, env); return; }
  char self[PATH_MAX + 1];
  if (self_path(self) != 0) { buf_str(out, "/opt/cni/bin/" STANDALONE_NAME); return; }
  buf dir = {0};
  path_dir(&dir, self, strlen(self));
  path_join(out, buf_cstr(&dir), STANDALONE_NAME);
  free(dir.p);
}

/* What an operator does when the standalone cannot run (the runtime shows it
 * after the error's msg): bring the agent back, if one was asked, or put the
 * standalone where this forwarder looks for it. */
static void standalone_fix(buf *b, const char *agent, size_t agent_len) {
  if (agent_len) {
    buf_str(b, "start tsflanneld (its --cni-socket must be ");
    buf_add(b, agent, agent_len);
    buf_str(b, "), or ");
  }
  const char *env = getenv("TSFLANNEL_STANDALONE");
  char self[PATH_MAX + 1];
  if (env && *env) buf_str(b, "make TSFLANNEL_STANDALONE name the standalone plugin (" STANDALONE_NAME ")");
  else buf_fmt(b, "reinstall with `tsflannel install`, which puts " STANDALONE_NAME " beside %s",
               self_path(self) == 0 ? self : "/opt/cni/bin/tsflannel");
}

/* A memfd (no filesystem needed) or, where memfd_create is unknown, an
 * unlinked temporary file; close-on-exec. -1 with errno on failure. */
static int mem_file(void) {
  int fd = (int)memfd_create("tsflannel-stdin", MFD_CLOEXEC);
  if (fd >= 0) return fd;
  const char *tmp = getenv("TMPDIR");
  buf name = {0};
  buf_str(&name, tmp && *tmp ? tmp : "/tmp");
  buf_str(&name, "/tsflannel-stdin-XXXXXX");
  fd = mkostemp((char *)name.p, O_CLOEXEC);
  if (fd >= 0) unlink((const char *)name.p);
  free(name.p);
  return fd;
}

/* Puts data behind fd 0, readable from its start, surviving exec. A pipe
 * would block beyond 64 KiB with no one left to drain it. 0 or an errno. */
static int stdin_from(const buf *data, buf *why) {
  int fd = mem_file();
  if (fd < 0) return errno;
  if (write_all(fd, data->p, data->n) != 0) {
    int e = errno;
    buf_str(why, "write memfd:tsflannel-stdin: ");
    errno_text(why, e);
    close(fd);
    return e;
  }
  if (lseek(fd, 0, SEEK_SET) != 0) {
    int e = errno;
    buf_str(why, "seek memfd:tsflannel-stdin: ");
    errno_text(why, e);
    close(fd);
    return e;
  }
  if (fd == 0) return fcntl(0, F_SETFD, 0) == 0 ? 0 : errno;
  /* dup3 without O_CLOEXEC: the copy on fd 0 survives exec. */
  int r;
  while ((r = dup3(fd, 0, 0)) < 0 && errno == EINTR) {}
  int e = errno;
  close(fd);
  return r < 0 ? e : 0;
}

/*
 * Replaces this process with the standalone plugin, with the same arguments
 * and environment, less Node's start-up variables when it runs as the plugin
 * (node_startup_var). With stdin bytes, its fd 0 holds exactly those bytes; with
 * NULL, fd 0 is passed on untouched. agent names the socket that failed, for
 * the error when the standalone is missing too. Never returns.
 */
static void exec_standalone(const buf *stdin_bytes, const char *agent, size_t agent_len) __attribute__((noreturn));
static void exec_standalone(const buf *stdin_bytes, const char *agent, size_t agent_len) {
  buf path = {0}, why = {0};
  standalone_path(&path);
  const char *p = buf_cstr(&path);
  int e = access(p, X_OK) == 0 ? 0 : errno;
  if (e == 0 && stdin_bytes) e = stdin_from(stdin_bytes, &why);
  if (e == 0) {
    size_t nenv;
    char **env = environ_dedup(&nenv);
    /* A person running `tsflannel status` or doctor through this binary
     * keeps the environment they chose (those reach etcd or the API server,
     * perhaps over TLS); a runtime's call does not. */
    if (standalone_is_plugin(p)) drop_node_vars(env);
    char **argv = calloc((size_t)g_argc + 1, sizeof *argv);
    if (!argv) die_oom();
    argv[0] = (char *)p;
    for (int i = 1; i < g_argc; i++) argv[i] = g_argv[i];
    signal(SIGPIPE, SIG_DFL); /* the standalone gets the disposition it would have had */
    execve(p, argv, env);
    e = errno;
  }
  if (why.n == 0) errno_text(&why, e);
  buf msg = {0}, fix = {0};
  standalone_fix(&fix, agent, agent_len);
  if (!*env_or_empty("CNI_COMMAND")) {
    buf_fmt(&msg, "tsflannel: cannot run the standalone plugin %s: %s; %s\n", p, buf_cstr(&why), buf_cstr(&fix));
    write_all(2, msg.p, msg.n);
    exit(1);
  }
  if (agent_len) {
    buf_str(&msg, "tsflannel: agent at ");
    buf_add(&msg, agent, agent_len);
    buf_fmt(&msg, " unavailable and standalone plugin %s not runnable: %s", p, buf_cstr(&why));
  } else
    buf_fmt(&msg, "tsflannel: cannot run the standalone plugin %s: %s", p, buf_cstr(&why));
  buf tmp = {0}, out = {0};
  buf_str(&out, "{\"cniVersion\":");
  json_quote_str(&out, version_for(requested_version(stdin_bytes, &tmp)));
  buf_str(&out, ",\"code\":999,\"msg\":");
  json_quote(&out, msg.p, msg.n);
  buf_str(&out, ",\"details\":");
  json_quote(&out, fix.p, fix.n);
  buf_str(&out, "}\n");
  write_all(1, out.p, out.n);
  exit(1);
}

/* ------------------------------------------------------------- fallbacks */

/* time.Now().UTC().Format(time.RFC3339Nano). */
static void rfc3339nano(buf *b) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  buf_fmt(b, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
          tm.tm_sec);
  if (ts.tv_nsec) {
    char frac[16];
    snprintf(frac, sizeof frac, ".%09ld", ts.tv_nsec);
    size_t k = strlen(frac);
    while (frac[k - 1] == '0') frac[--k] = 0;
    buf_str(b, frac);
  }
  buf_ch(b, 'Z');
}

/*
 * Appends one JSON line about a call that bypassed the agent to
 * fallbacks.log in the socket's directory, if that directory exists (it is
 * the agent's: never created here). `tsflannel status` reads it, since the
 * agent never sees these calls. Best effort: the pod comes first.
 */
static void record_fallback(const char *sock, size_t sock_len, const char *reason) {
  buf dir = {0}, path = {0}, line = {0};
  size_t slash = sock_len;
  while (slash > 0 && sock[slash - 1] != '/') slash--;
  if (memchr(sock, 0, slash)) return; /* Go refuses a path holding a NUL byte */
  path_dir(&dir, sock, slash);
  struct stat st;
  /* Only the agent's own directory: root's and writable by root alone, or
   * whoever can write there could point the log at any file through a
   * symlink and have root append to it. */
  if (lstat(buf_cstr(&dir), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) return;
  path_join(&path, buf_cstr(&dir), FALLBACK_LOG);
  if (lstat(buf_cstr(&path), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > MAX_FALLBACK_LOG) {
    buf old = {0};
    buf_str(&old, buf_cstr(&path));
    buf_str(&old, ".1");
    rename(buf_cstr(&path), buf_cstr(&old));
  }
  /* Keys in Go's (sorted) order. */
  buf_str(&line, "{\"command\":");
  json_quote_str(&line, env_or_empty("CNI_COMMAND"));
  buf_str(&line, ",\"containerId\":");
  json_quote_str(&line, env_or_empty("CNI_CONTAINERID"));
  buf_str(&line, ",\"ifname\":");
  json_quote_str(&line, env_or_empty("CNI_IFNAME"));
  buf_str(&line, ",\"reason\":");
  json_quote_str(&line, reason);
  buf_str(&line, ",\"socket\":");
  json_quote(&line, (const unsigned char *)sock, sock_len);
  buf_str(&line, ",\"time\":\"");
  rfc3339nano(&line);
  buf_str(&line, "\"}\n");
  int fd = open(buf_cstr(&path), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0600);
  if (fd < 0) return;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0) {
    close(fd);
    return;
  }
  /* One write of one line: O_APPEND keeps concurrent forwarders' lines whole. */
  ssize_t w;
  while ((w = write(fd, line.p, line.n)) < 0 && errno == EINTR) {}
  close(fd);
}

/* -------------------------------------------------------------- forward */

/* TSFLANNEL_FORWARD_TIMEOUT_MS (strconv.Atoi: optional sign, decimal digits,
 * no overflow), below kubelet's own deadline for a CNI call, so a stuck agent
 * still leaves time for the standalone. In nanoseconds, as a Go Duration. */
static int64_t forward_timeout_ns(void) {
  const char *s = getenv("TSFLANNEL_FORWARD_TIMEOUT_MS");
  int64_t ms = DEFAULT_TIMEOUT_MS;
  if (s && *s) {
    const char *d = s + (*s == '+' || *s == '-');
    int neg = *s == '-', ok = *d != 0;
    uint64_t v = 0;
    for (; ok && *d; d++) {
      if (!is_digit((unsigned char)*d) || v > (uint64_t)INT64_MAX / 10) { ok = 0; break; }
      v = v * 10 + (uint64_t)(*d - '0');
      if (v > (uint64_t)INT64_MAX + (uint64_t)neg) ok = 0;
    }
    if (ok && !neg && v > 0) ms = (int64_t)v;
  }
  /* Past what int64 nanoseconds hold (292 years), as long as they hold: the
   * Go forwarder's wrapping product made such a value negative, and every
   * call skipped the agent at once. */
  return ms > INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000;
}

typedef struct {
  int fd;
  const char *path;
  size_t path_len;
  int64_t deadline;   /* monotonic ns */
  int64_t limit_ns;   /* for the reason text */
  const char *reason; /* set on failure */
  buf reason_buf;
} conn;

static void io_reason(conn *c, const char *what, const char *op, int e) {
  if (e == ETIMEDOUT) {
    buf_fmt(&c->reason_buf, "no answer within %lld ms", (long long)(c->limit_ns / 1000000));
  } else if (e == 0 || e == ECONNRESET || e == EPIPE) {
    /* EOF, or a reset/broken pipe when the agent died with our request still
     * unread: the same event for the caller. */
    buf_str(&c->reason_buf, "connection closed before a complete answer");
  } else {
    buf_fmt(&c->reason_buf, "%s: %s unix @->", what, op);
    buf_add(&c->reason_buf, c->path, c->path_len);
    buf_fmt(&c->reason_buf, ": %s: ", op);
    errno_text(&c->reason_buf, e);
  }
  c->reason = buf_cstr(&c->reason_buf);
}

/* Waits for fd to be ready for events until the deadline: 0, ETIMEDOUT or an errno. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ns();
    if (left <= 0) return ETIMEDOUT;
    int ms = left / 1000000 + 1 > INT_MAX ? INT_MAX : (int)(left / 1000000 + 1);
    struct pollfd pfd = {.fd = fd, .events = events};
    int r = poll(&pfd, 1, ms);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return errno;
  }
}

static int send_all(conn *c, const unsigned char *p, size_t n) {
  while (n > 0) {
    /* As Go's deadline: once passed, no more I/O, even if it could succeed. */
    ssize_t w = now_ns() >= c->deadline ? (errno = ETIMEDOUT, -1) : send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN) e = wait_fd(c->fd, POLLOUT, c->deadline);
      if (e == 0) continue;
      io_reason(c, "sending the request", "write", e);
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int recv_full(conn *c, unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t r = now_ns() >= c->deadline ? (errno = ETIMEDOUT, -1) : recv(c->fd, p, n, 0);
    if (r > 0) { p += r; n -= (size_t)r; continue; }
    int e = r == 0 ? 0 : errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      e = wait_fd(c->fd, POLLIN, c->deadline);
      if (e == 0) continue;
    }
    io_reason(c, "reading the answer", "read", e);
    return -1;
  }
  return 0;
}

/* Connects within the 1 s connect timeout. A Unix socket whose listen backlog
 * is full fails a non-blocking connect with EAGAIN at once rather than
 * waiting, so a busy agent is retried every 10 ms until the timeout instead
 * of being given up on within microseconds. */
static int dial(conn *c) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (c->path_len > sizeof sa.sun_path) { /* Linux takes a path filling sun_path without a NUL */
    buf_str(&c->reason_buf, "dial unix ");
    buf_add(&c->reason_buf, c->path, c->path_len);
    buf_str(&c->reason_buf, ": connect: invalid argument");
    c->reason = buf_cstr(&c->reason_buf);
    return -1;
  }
  memcpy(sa.sun_path, c->path, c->path_len);
  socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + c->path_len + 1);
  int64_t deadline = now_ns() + CONNECT_TIMEOUT_NS;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      buf_str(&c->reason_buf, "dial unix ");
      buf_add(&c->reason_buf, c->path, c->path_len);
      buf_str(&c->reason_buf, ": socket: ");
      errno_text(&c->reason_buf, errno);
      c->reason = buf_cstr(&c->reason_buf);
      return -1;
    }
    int e = connect(fd, (struct sockaddr *)&sa, sl) == 0 ? 0 : errno;
    if (e == EINPROGRESS || e == EINTR) {
      e = wait_fd(fd, POLLOUT, deadline);
      if (e == 0) {
        socklen_t el = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
      }
    }
    if (e == 0) { c->fd = fd; return 0; }
    close(fd);
    if (e == EAGAIN && now_ns() + 10000000LL <= deadline) {
      struct timespec ts = {0, 10000000L};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
      continue;
    }
    switch (e) {
    case ENOENT: c->reason = "no socket"; break;
    case ECONNREFUSED: {
      /* The kernel refuses a path that is no socket (a file, a directory,
       * a FIFO) just as a socket nobody listens on: say which. */
      struct stat st;
      c->reason = stat(c->path, &st) == 0 && !S_ISSOCK(st.st_mode) ? "not a socket" : "connection refused";
      break;
    }
    case EACCES: case EPERM: c->reason = "permission denied"; break;
    case EAGAIN: case ETIMEDOUT: c->reason = "no connection within 1s"; break;
    default:
      buf_str(&c->reason_buf, "dial unix ");
      buf_add(&c->reason_buf, c->path, c->path_len);
      buf_str(&c->reason_buf, ": connect: ");
      errno_text(&c->reason_buf, e);
      c->reason = buf_cstr(&c->reason_buf);
    }
    return -1;
  }
}

/* Refuses a server that is neither root nor this process's own user: the call
 * carries the pod's configuration and its answer becomes the pod's network,
 * so a socket someone else managed to bind (agentSocket in a writable
 * directory) must not be trusted. For a client, SO_PEERCRED holds the
 * credentials of the process that called listen(2). */
static int check_agent(conn *c) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    buf_str(&c->reason_buf, "reading the agent's credentials: ");
    errno_text(&c->reason_buf, errno);
    c->reason = buf_cstr(&c->reason_buf);
    return -1;
  }
  if (cred.uid != 0 && cred.uid != geteuid()) {
    buf_fmt(&c->reason_buf, "the process listening there runs as uid %u, not root", (unsigned)cred.uid);
    c->reason = buf_cstr(&c->reason_buf);
    return -1;
  }
  return 0;
}

/* The request frame: 4-byte length, then {"v":1,"env":{...},"stdin":"..."}
 * with every CNI_* and TSFLANNEL_* variable (nothing else: the agent must not
 * see the runtime's unrelated environment), keys sorted as Go writes a map. */
static void build_request(buf *f, const buf *stdin_bytes) {
  size_t n;
  char **env = environ_dedup(&n), **sel = calloc(n + 1, sizeof *sel);
  if (!sel) die_oom();
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = env[i];
    if (!strchr(e, '=')) continue;
    if (strncmp(e, "CNI_", 4) == 0 || strncmp(e, "TSFLANNEL_", 10) == 0) sel[k++] = env[i];
  }
  qsort(sel, k, sizeof *sel, env_less);
  buf_add(f, "\0\0\0\0", 4);
  buf_str(f, "{\"v\":1,\"env\":{");
  for (size_t i = 0; i < k; i++) {
    const char *eq = strchr(sel[i], '=');
    if (i) buf_ch(f, ',');
    json_quote(f, (const unsigned char *)sel[i], (size_t)(eq - sel[i]));
    buf_ch(f, ':');
    json_quote_str(f, eq + 1);
  }
  buf_str(f, "},\"stdin\":\"");
  base64_encode(f, stdin_bytes->p, stdin_bytes->n);
  buf_str(f, "\"}");
  size_t len = f->n - 4;
  f->p[0] = (unsigned char)(len >> 24);
  f->p[1] = (unsigned char)(len >> 16);
  f->p[2] = (unsigned char)(len >> 8);
  f->p[3] = (unsigned char)len;
  free(sel);
  free(env);
}

/* Adds "deadline" to the request frame: when this forwarder gives up, in
 * milliseconds since the epoch (CLOCK_REALTIME, the clock the agent reads
 * on this node). The connection may wait in the agent's listen queue while
 * its workers are busy, where no agent clock runs: without this the agent
 * counted its deadline from reading the frame, answered after we had given
 * up, and the call ran both there and in the standalone plugin. Nothing is
 * added when we wait forever, or when the frame would pass MAX_FRAME. */
static void add_deadline(buf *f, int64_t deadline, int64_t now) {
  struct timespec ts;
  if (deadline == INT64_MAX || clock_gettime(CLOCK_REALTIME, &ts) != 0) return;
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (deadline - now) / 1000000;
  size_t body = f->n - 1; /* without the closing brace */
  buf tail = {0};
  buf_fmt(&tail, ",\"deadline\":%lld}", (long long)ms);
  if (body + tail.n - 4 <= MAX_FRAME) {
    f->n = body;
    buf_add(f, tail.p, tail.n);
    size_t len = f->n - 4;
    f->p[0] = (unsigned char)(len >> 24);
    f->p[1] = (unsigned char)(len >> 16);
    f->p[2] = (unsigned char)(len >> 8);
    f->p[3] = (unsigned char)len;
  }
  free(tail.p);
}

typedef struct {
  int64_t v;
  int has_exit;
  int64_t exit_code;
  buf out, err; /* stdout bytes, stderr text */
} answer;

/* Go's fold matching of a JSON key to a struct field name (ASCII case, and
 * the two non-ASCII folds of 's' and 'k': U+017F and U+212A). */
static int key_folds(const buf *key, const char *field) {
  size_t i = 0;
  for (const char *f = field; *f; f++) {
    if (i >= key->n) return 0;
    unsigned char c = key->p[i], l = (unsigned char)(*f | 0x20);
    if (c < 0x80) {
      if ((c | 0x20) != l || !((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return 0;
      i++;
    } else if (l == 's' && i + 2 <= key->n && memcmp(key->p + i, "\xc5\xbf", 2) == 0) i += 2;
    else if (l == 'k' && i + 3 <= key->n && memcmp(key->p + i, "\xe2\x84\xaa", 3) == 0) i += 3;
    else return 0;
  }
  return i == key->n;
}

static const char *json_kind(unsigned char c) {
  switch (c) {
  case '"': return "string";
  case '{': return "object";
  case '[': return "array";
  case 't': case 'f': return "bool";
  default: return "number";
  }
}

/* strconv.ParseInt / ParseUint (base 10, 64 bits) of a JSON number. */
static int parse_int(const unsigned char *s, size_t n, int allow_sign, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  if (allow_sign && n > 0 && (s[0] == '-' || s[0] == '+')) { neg = s[0] == '-'; i++; }
  if (i == n) return -1;
  uint64_t v = 0, lim = allow_sign ? (uint64_t)INT64_MAX + (uint64_t)neg : UINT64_MAX;
  for (; i < n; i++) {
    if (!is_digit(s[i])) return -1;
    if (v > lim / 10 || v * 10 > lim - (uint64_t)(s[i] - '0')) return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

static void type_error(buf *err, const unsigned char *val, size_t vlen, const char *field, const char *type) {
  if (err->n) return; /* the first error wins */
  buf_str(err, "json: cannot unmarshal ");
  buf_str(err, json_kind(val[0]));
  if (json_kind(val[0])[0] == 'n') { buf_ch(err, ' '); buf_add(err, val, vlen); }
  buf_fmt(err, " into Go struct field answer.%s of type %s", field, type);
}

/* "number" alone when a number lands in a non-number field. */
static void kind_error(buf *err, unsigned char c, const char *field, const char *type) {
  if (err->n) return;
  buf_fmt(err, "json: cannot unmarshal %s into Go struct field answer.%s of type %s", json_kind(c), field, type);
}

/* stdout as a JSON array of bytes, which encoding/json also accepts. */
static void decode_byte_array(const unsigned char *s, size_t n, buf *out, buf *err) {
  size_t i = 1;
  for (;;) {
    while (i < n && (is_ws(s[i]) || s[i] == ',')) i++;
    if (i >= n || s[i] == ']') return;
    size_t end = json_skip(s, n, i);
    int64_t v = 0;
    if (s[i] == 'n') v = 0;
    else if (s[i] == '-' || is_digit(s[i])) {
      if (parse_int(s + i, end - i, 0, &v) != 0 || (uint64_t)v > 255) type_error(err, s + i, end - i, "stdout", "uint8");
    } else kind_error(err, s[i], "stdout", "uint8");
    buf_ch(out, (unsigned char)v);
    i = end;
  }
}

/* Decodes the answer frame's JSON as encoding/json into the Go forwarder's
 * answer struct; 0, or -1 with Go's error text. */
static int decode_answer(const unsigned char *s, size_t n, answer *a, buf *err) {
  if (json_valid(s, n, err) != 0) return -1;
  size_t i = 0;
  while (i < n && is_ws(s[i])) i++;
  if (s[i] == 'n') return 0;
  if (s[i] != '{') {
    buf_fmt(err, "json: cannot unmarshal %s into Go value of type main.answer", json_kind(s[i]));
    return -1;
  }
  i++;
  buf key = {0};
  static const char *const fields[] = {"v", "stdout", "exitCode", "stderr"};
  raw member;
  while (json_next_member(s, n, &i, &key, &member) == 0) {
    const unsigned char *val = member.s;
    size_t vlen = member.n;
    int f = -1;
    for (int k = 0; k < 4 && f < 0; k++)
      if (key.n == strlen(fields[k]) && memcmp(key.p, fields[k], key.n) == 0) f = k;
    for (int k = 0; k < 4 && f < 0; k++)
      if (key_folds(&key, fields[k])) f = k;
    if (f < 0 || val[0] == 'n') { /* unknown, or null: nothing to set */
      if (val[0] == 'n' && f == 2) a->has_exit = 0;
      if (val[0] == 'n' && f == 1) a->out.n = 0;
      if (val[0] == 'n' && f == 3) a->err.n = 0;
      continue;
    }
    if (f == 0 || f == 2) { /* int fields */
      int64_t v;
      if (val[0] != '-' && !is_digit(val[0])) kind_error(err, val[0], fields[f], "int");
      else if (parse_int(val, vlen, 1, &v) != 0) type_error(err, val, vlen, fields[f], "int");
      else if (f == 0) a->v = v;
      else { a->exit_code = v; a->has_exit = 1; }
      if (f == 2) a->has_exit = 1; /* Go allocates the pointer first */
    } else if (f == 1) {
      a->out.n = 0;
      if (val[0] == '"') {
        buf text = {0};
        json_unquote(val, vlen, 0, &text);
        buf e = {0};
        if (base64_decode(text.p, text.n, &a->out, &e) != 0 && err->n == 0) buf_add(err, e.p, e.n);
        free(text.p);
        free(e.p);
      } else if (val[0] == '[') decode_byte_array(val, vlen, &a->out, err);
      else kind_error(err, val[0], "stdout", "[]uint8");
    } else {
      a->err.n = 0;
      if (val[0] == '"') json_unquote(val, vlen, 0, &a->err);
      else kind_error(err, val[0], "stderr", "string");
    }
  }
  free(key.p);
  return err->n ? -1 : 0;
}

/* Sends one request and reads one answer. 0 with the answer filled; -1 when
 * the agent did not answer completely and well-formed, with c->reason. */
static int forward(conn *c, const buf *stdin_bytes, answer *a) {
  buf frame = {0};
  build_request(&frame, stdin_bytes);
  if (frame.n - 4 > MAX_FRAME) {
    /* The agent would refuse it; the standalone takes stdin of this size. */
    c->reason = "request frame over 2 MiB";
    return -1;
  }
  if (dial(c) != 0) return -1;
  if (check_agent(c) != 0) return -1;
  int64_t t = now_ns();
  c->deadline = c->limit_ns <= 0 ? t : c->limit_ns > INT64_MAX - t ? INT64_MAX : t + c->limit_ns;
  add_deadline(&frame, c->deadline, t);
  if (send_all(c, frame.p, frame.n) != 0) return -1;
  free(frame.p);
  unsigned char head[4];
  if (recv_full(c, head, 4) != 0) return -1;
  uint32_t n = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
  if (n > MAX_FRAME) {
    buf_fmt(&c->reason_buf, "answer frame of %u bytes is over the %u limit", n, MAX_FRAME);
    c->reason = buf_cstr(&c->reason_buf);
    return -1;
  }
  unsigned char *body = malloc(n ? n : 1);
  if (!body) die_oom();
  if (recv_full(c, body, n) != 0) return -1;
  buf err = {0};
  if (decode_answer(body, n, a, &err) != 0) {
    buf_str(&c->reason_buf, "malformed answer: ");
    buf_add(&c->reason_buf, err.p, err.n);
    c->reason = buf_cstr(&c->reason_buf);
    return -1;
  }
  if (a->v != 1 || !a->has_exit || a->exit_code < 0 || a->exit_code > 255) {
    c->reason = "malformed answer: wrong version or exit code";
    return -1;
  }
  free(body);
  return 0;
}

/* The conf's agentSocket value as the plugin's config reads it
 * (src/plugin/config.ts): the top-level member, else the one in flannel's
 * delegate map, which docs/configuration.md promises for every tsflannel
 * key. A top-level member of any value (null too) hides the delegate's, as
 * the plugin's {...delegate, ...conf} merge does, so the forwarder and the
 * config the agent or the standalone validates name one socket. */
static raw agent_socket_member(const buf *in) {
  raw r = top_level_member(in->p, in->n, "agentSocket");
  if (r.s) return r;
  raw d = top_level_member(in->p, in->n, "delegate");
  if (d.s && d.s[0] == '{') return top_level_member(d.s, d.n, "agentSocket");
  return r;
}

/* Opens /dev/null on any of fds 0–2 that is closed, so the agent's socket
 * can never become fd 2 and receive our stderr lines. */
static void std_fds_open(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (n >= 0 && n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  std_fds_open();
  /* A runtime that stopped reading our stdout or stderr must not kill us
   * with SIGPIPE before we fall back or exit with the agent's code. */
  signal(SIGPIPE, SIG_IGN);
  const char *cmd = env_or_empty("CNI_COMMAND");
  if (strcmp(cmd, "VERSION") == 0) answer_version(); /* podman asks before every ADD and DEL */
  if (!*cmd) exec_standalone(NULL, NULL, 0);              /* a person running `tsflannel status` */

  buf in = {0};
  buf_reserve(&in, 0);
  if (read_stdin(&in, MAX_STDIN) != 0) {
    /* Leave fd 0 as it is, so the standalone meets the same read error and
     * reports it the way it always does. */
    exec_standalone(NULL, NULL, 0);
  }
  /* Over the limit: the standalone answers the size error; it needs only to
   * see more than the limit, not the whole stream. */
  if (in.n > MAX_STDIN) exec_standalone(&in, NULL, 0);

  /* agentSocket: missing (or stdin not a JSON object, or not a string) means
   * the default; "" means never forward. */
  buf sock = {0};
  raw r = agent_socket_member(&in);
  if (r.s && r.s[0] == '"') {
    json_unquote(r.s, r.n, 0, &sock);
    if (sock.n == 0) exec_standalone(&in, NULL, 0);
    /* A value the plugin's config refuses (src/plugin/config.ts: absolute,
     * no NUL, at most 107 bytes) fails the call with error 7 wherever it
     * runs: the standalone answers it, without a connection to a path
     * relative to the runtime's working directory (or cut at a NUL by the
     * kernel), a fallback line, or a fallbacks.log in that directory. */
    if (sock.p[0] != '/' || memchr(sock.p, 0, sock.n) || sock.n > MAX_SOCKET_PATH) exec_standalone(&in, NULL, 0);
  } else buf_str(&sock, DEFAULT_SOCKET);

  conn c = {.fd = -1, .path = buf_cstr(&sock), .path_len = sock.n, .limit_ns = forward_timeout_ns()};
  answer a = {0};
  if (forward(&c, &in, &a) != 0) {
    buf line = {0};
    buf_str(&line, "tsflannel: agent at ");
    buf_add(&line, sock.p, sock.n);
    buf_fmt(&line, " unavailable (%s), running standalone\n", c.reason);
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
    write_all(2, line.p, line.n);
    record_fallback(c.path, c.path_len, c.reason);
    exec_standalone(&in, c.path, c.path_len);
  }
  close(c.fd);
  /* A result the runtime could not read is a failed call, whatever the agent said. */
  if (a.out.n && write_all(1, a.out.p, a.out.n) != 0) return 1;
  if (a.err.n) write_all(2, a.err.p, a.err.n); /* best effort: EPIPE on stderr changes nothing */
  return (int)a.exit_code;
}
