/*
 * Buffers, UTF-8, JSON and base64 for the forwarder, as Go's encoding/json
 * and encoding/base64 behave (the first forwarder was Go): which documents
 * are valid (depth limit 10000), how strings decode (invalid UTF-8 and lone
 * surrogates become U+FFFD), how strings are escaped when written, and the
 * error texts that end up in fallback reasons. No recursion: nesting is
 * tracked with an explicit stack.
 */
#define _GNU_SOURCE
#include "json.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* encoding/json's limit; a deeper document is invalid. */
#define MAX_DEPTH 10000

/* ---------------------------------------------------------------- buffers */

void die_oom(void) {
  static const char m[] = "tsflannel: out of memory\n";
  ssize_t r = write(2, m, sizeof m - 1);
  (void)r;
  _exit(1);
}

void buf_reserve(buf *b, size_t more) {
  if (more > SIZE_MAX - b->n - 1) die_oom();
  size_t need = b->n + more + 1; /* +1: room for a terminating NUL */
  if (need <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  unsigned char *p = realloc(b->p, cap);
  if (!p) die_oom();
  b->p = p;
  b->cap = cap;
}

void buf_add(buf *b, const void *s, size_t n) {
  buf_reserve(b, n);
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

void buf_str(buf *b, const char *s) { buf_add(b, s, strlen(s)); }
void buf_ch(buf *b, unsigned char c) { buf_add(b, &c, 1); }

void buf_fmt(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (k < 0) return;
  buf_reserve(b, (size_t)k);
  va_start(ap, fmt);
  vsnprintf((char *)b->p + b->n, (size_t)k + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)k;
}

/* A C string of b (always NUL-terminated once anything was added). */
const char *buf_cstr(buf *b) {
  if (!b->p) buf_add(b, "", 0);
  return (const char *)b->p;
}

/* ------------------------------------------------------------ UTF-8, JSON */

/* Go's utf8.DecodeRune: the rune at s (n > 0 bytes), or -1 for an invalid or
 * incomplete sequence, which is one byte wide. */
static int32_t utf8_decode(const unsigned char *s, size_t n, size_t *size) {
  unsigned char c = s[0];
  *size = 1;
  if (c < 0x80) return c;
  unsigned char lo = 0x80, hi = 0xbf;
  size_t need;
  int32_t r;
  if (c >= 0xc2 && c <= 0xdf) { need = 2; r = c & 0x1f; }
  else if (c >= 0xe0 && c <= 0xef) {
    need = 3; r = c & 0x0f;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4; r = c & 0x07;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else return -1;
  if (n < need) return -1;
  for (size_t i = 1; i < need; i++) {
    unsigned char d = s[i];
    if (d < (i == 1 ? lo : 0x80) || d > (i == 1 ? hi : 0xbf)) return -1;
    r = (r << 6) | (d & 0x3f);
  }
  *size = need;
  return r;
}

static void utf8_encode(buf *b, uint32_t r) {
  unsigned char t[4];
  size_t k;
  if (r < 0x80) { t[0] = (unsigned char)r; k = 1; }
  else if (r < 0x800) { t[0] = (unsigned char)(0xc0 | (r >> 6)); t[1] = (unsigned char)(0x80 | (r & 0x3f)); k = 2; }
  else if (r < 0x10000) {
    t[0] = (unsigned char)(0xe0 | (r >> 12)); t[1] = (unsigned char)(0x80 | ((r >> 6) & 0x3f));
    t[2] = (unsigned char)(0x80 | (r & 0x3f)); k = 3;
  } else {
    t[0] = (unsigned char)(0xf0 | (r >> 18)); t[1] = (unsigned char)(0x80 | ((r >> 12) & 0x3f));
    t[2] = (unsigned char)(0x80 | ((r >> 6) & 0x3f)); t[3] = (unsigned char)(0x80 | (r & 0x3f)); k = 4;
  }
  buf_add(b, t, k);
}

/* A JSON string as encoding/json writes it (HTML-safe escaping, invalid
 * UTF-8 as \ufffd, U+2028 and U+2029 escaped). */
void json_quote(buf *b, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_reserve(b, n + 2);
  buf_ch(b, '"');
  size_t start = 0, i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') { i++; continue; }
      buf_add(b, s + start, i - start);
      switch (c) {
      case '"': buf_str(b, "\\\""); break;
      case '\\': buf_str(b, "\\\\"); break;
      case '\n': buf_str(b, "\\n"); break;
      case '\r': buf_str(b, "\\r"); break;
      case '\t': buf_str(b, "\\t"); break;
      default: {
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        buf_add(b, e, 6);
      }
      }
      start = ++i;
      continue;
    }
    size_t size;
    int32_t r = utf8_decode(s + i, n - i, &size);
    if (r < 0 || r == 0x2028 || r == 0x2029) {
      buf_add(b, s + start, i - start);
      buf_str(b, r < 0 ? "\\ufffd" : r == 0x2028 ? "\\u2028" : "\\u2029");
      start = i + size;
    }
    i += size;
  }
  buf_add(b, s + start, n - start);
  buf_ch(b, '"');
}

void json_quote_str(buf *b, const char *s) { json_quote(b, (const unsigned char *)s, s ? strlen(s) : 0); }

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* encoding/json's quoteChar: how a syntax error names the offending byte. */
static void quote_char(buf *b, unsigned char c) {
  buf_ch(b, '\'');
  if (c == '\'') buf_str(b, "\\'");
  else if (c == '"') buf_ch(b, '"');
  else if (c == '\a') buf_str(b, "\\a");
  else if (c == '\b') buf_str(b, "\\b");
  else if (c == '\f') buf_str(b, "\\f");
  else if (c == '\n') buf_str(b, "\\n");
  else if (c == '\r') buf_str(b, "\\r");
  else if (c == '\t') buf_str(b, "\\t");
  else if (c == '\v') buf_str(b, "\\v");
  else if (c == '\\') buf_str(b, "\\\\");
  else if (c < 0x20 || c == 0x7f) buf_fmt(b, "\\x%02x", c);
  else if (c >= 0x80 && (c <= 0xa0 || c == 0xad)) buf_fmt(b, "\\u%04x", c);
  else utf8_encode(b, c);
  buf_ch(b, '\'');
}

/*
 * Validates a whole JSON document as encoding/json's checkValid does. 0 when
 * valid; else -1 with Go's message in err (when err is not NULL).
 */
int json_valid(const unsigned char *s, size_t n, buf *err) {
  static unsigned char stack[MAX_DEPTH + 1]; /* '{' or '[' per open level */
  size_t depth = 0, i = 0;
  const char *ctx;
  enum { VALUE, VALUE_OR_EMPTY, KEY, KEY_OR_EMPTY, AFTER_VALUE } want = VALUE;
  int in_key = 0; /* in an object: 1 after a key, before its value */
  unsigned char c = 0;
/* At the end of the input, Go's scanner steps on a space: an unfinished
 * token fails on it, anything else is "unexpected end". */
#define NEXT() (i < n ? s[i++] : (unsigned char)' ')
  for (;;) {
    while (i < n && is_ws(s[i])) i++;
    if (want == AFTER_VALUE) {
      if (depth == 0) {
        if (i == n) return 0;
        c = s[i];
        ctx = "after top-level value";
        goto bad;
      }
      if (i == n) goto eof;
      c = s[i++];
      if (stack[depth - 1] == '{') {
        if (in_key) {
          if (c != ':') { ctx = "after object key"; goto bad; }
          in_key = 0;
          want = VALUE;
        } else if (c == ',') want = KEY;
        else if (c == '}') { depth--; in_key = 0; want = AFTER_VALUE; }
        else { ctx = "after object key:value pair"; goto bad; }
      } else {
        if (c == ',') want = VALUE;
        else if (c == ']') { depth--; want = AFTER_VALUE; }
        else { ctx = "after array element"; goto bad; }
      }
      continue;
    }
    if (i == n) goto eof;
    c = s[i++];
    if (want == KEY || want == KEY_OR_EMPTY) {
      if (c == '}' && want == KEY_OR_EMPTY) { depth--; want = AFTER_VALUE; continue; }
      if (c != '"') { ctx = "looking for beginning of object key string"; goto bad; }
      in_key = 1;
    } else if (c == ']' && want == VALUE_OR_EMPTY) {
      depth--;
      want = AFTER_VALUE;
      continue;
    }
    /* A value (or a key's string) starting with c. */
    if (c == '{' || c == '[') {
      if (depth >= MAX_DEPTH) { ctx = "exceeded max depth"; goto bad; }
      stack[depth++] = c;
      want = c == '{' ? KEY_OR_EMPTY : VALUE_OR_EMPTY;
      continue;
    }
    want = AFTER_VALUE;
    if (c == '"') {
      for (;;) {
        if (i == n) goto eof;
        c = s[i++];
        if (c == '"') break;
        if (c < 0x20) { ctx = "in string literal"; goto bad; }
        if (c != '\\') continue;
        c = NEXT();
        if (c == 'u') {
          for (int k = 0; k < 4; k++) {
            c = NEXT();
            if (hexval(c) < 0) { ctx = "in \\u hexadecimal character escape"; goto bad; }
          }
        } else if (!strchr("bfnrt\\/\"", c) || c == 0) {
          ctx = "in string escape code";
          goto bad;
        }
      }
      continue;
    }
    if (c == 't' || c == 'f' || c == 'n') {
      const char *lit = c == 't' ? "true" : c == 'f' ? "false" : "null";
      for (size_t k = 1; lit[k]; k++) {
        c = NEXT();
        if (c != (unsigned char)lit[k]) {
          static char m[64];
          snprintf(m, sizeof m, "in literal %s (expecting '%c')", lit, lit[k]);
          ctx = m;
          goto bad;
        }
      }
      continue;
    }
    if (c == '-' || is_digit(c)) {
      if (c == '-') {
        c = NEXT();
        if (!is_digit(c)) { ctx = "in numeric literal"; goto bad; }
      }
      if (c != '0') while (i < n && is_digit(s[i])) i++;
      if (i < n && s[i] == '.') {
        i++;
        c = NEXT();
        if (!is_digit(c)) { ctx = "after decimal point in numeric literal"; goto bad; }
        while (i < n && is_digit(s[i])) i++;
      }
      if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        c = NEXT();
        if (!is_digit(c)) { ctx = "in exponent of numeric literal"; goto bad; }
        while (i < n && is_digit(s[i])) i++;
      }
      /* A number ends at the first byte that cannot continue it: at the
       * end of the input, only a top-level number is complete. */
      if (i == n && depth > 0) goto eof;
      continue;
    }
    ctx = "looking for beginning of value";
    goto bad;
  }
eof:
  if (err) buf_str(err, "unexpected end of JSON input");
  return -1;
#undef NEXT
bad:
  if (err) {
    buf_str(err, "invalid character ");
    quote_char(err, c);
    buf_ch(err, ' ');
    buf_str(err, ctx);
  }
  return -1;
}

/* The end of the (valid) value starting at s[i], after skipping white space. */
size_t json_skip(const unsigned char *s, size_t n, size_t i) {
  size_t depth = 0;
  while (i < n && is_ws(s[i])) i++;
  do {
    while (i < n && (is_ws(s[i]) || s[i] == ',' || s[i] == ':')) i++;
    if (i >= n) return n;
    unsigned char c = s[i++];
    if (c == '{' || c == '[') depth++;
    else if (c == '}' || c == ']') depth--;
    else if (c == '"') {
      while (i < n && s[i] != '"') i += s[i] == '\\' ? 2 : 1;
      i++;
    } else {
      while (i < n && !is_ws(s[i]) && !strchr(",:]}", s[i])) i++;
    }
  } while (depth > 0);
  return i < n ? i : n;
}

/* The 4 hex digits of a \u escape at s[i] ("\uXXXX"), or -1. */
static int32_t getu4(const unsigned char *s, size_t n, size_t i) {
  if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u') return -1;
  int32_t r = 0;
  for (size_t k = i + 2; k < i + 6; k++) {
    int h = hexval(s[k]);
    if (h < 0) return -1;
    r = r * 16 + h;
  }
  return r;
}

/* Decodes the (valid) JSON string at s[i] == '"' into out as encoding/json
 * does; returns the index after its closing quote. */
size_t json_unquote(const unsigned char *s, size_t n, size_t i, buf *out) {
  i++;
  size_t start = i;
  while (i < n && s[i] != '"') {
    unsigned char c = s[i];
    if (c == '\\') {
      buf_add(out, s + start, i - start);
      unsigned char e = i + 1 < n ? s[i + 1] : 0;
      if (e == 'u') {
        int32_t r = getu4(s, n, i);
        i += 6;
        if (r >= 0xd800 && r < 0xe000) {
          int32_t r2 = getu4(s, n, i);
          if (r < 0xdc00 && r2 >= 0xdc00 && r2 < 0xe000) {
            r = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
            i += 6;
          } else r = 0xfffd;
        }
        utf8_encode(out, (uint32_t)r);
      } else {
        const char *from = "bfnrt", *to = "\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        buf_ch(out, k ? (unsigned char)to[k - from] : e);
        i += 2;
      }
      start = i;
    } else if (c < 0x80) i++;
    else {
      size_t size;
      int32_t r = utf8_decode(s + i, n - i, &size);
      if (r < 0) {
        buf_add(out, s + start, i - start);
        buf_str(out, "\xef\xbf\xbd");
        start = i + 1;
      }
      i += size;
    }
  }
  buf_add(out, s + start, i - start);
  return i + 1;
}

int json_next_member(const unsigned char *s, size_t n, size_t *i, buf *key, raw *val) {
  size_t at = *i;
  while (at < n && (is_ws(s[at]) || s[at] == ',')) at++;
  if (at >= n || s[at] == '}') {
    *i = at;
    return -1;
  }
  key->n = 0;
  at = json_unquote(s, n, at, key);
  while (at < n && (is_ws(s[at]) || s[at] == ':')) at++;
  size_t end = json_skip(s, n, at);
  val->s = s + at;
  val->n = end - at;
  *i = end;
  return 0;
}

/* The raw value of the last top-level member named key (as Go's map decoding
 * keeps the last duplicate); absent when the body is not a valid JSON object.
 * A key nested deeper never matches. */
raw top_level_member(const unsigned char *s, size_t n, const char *key) {
  raw found = {NULL, 0};
  if (!s || json_valid(s, n, NULL) != 0) return found;
  size_t i = 0, klen = strlen(key);
  while (i < n && is_ws(s[i])) i++;
  if (i >= n || s[i] != '{') return found;
  i++;
  buf k = {0};
  raw val;
  while (json_next_member(s, n, &i, &k, &val) == 0)
    if (k.n == klen && memcmp(k.p, key, klen) == 0) found = val;
  free(k.p);
  return found;
}

/* The decoded string value of a top-level member; NULL when it is absent or
 * not a string. */
const char *string_member(const unsigned char *s, size_t n, const char *key, buf *out) {
  raw r = top_level_member(s, n, key);
  if (!r.s || r.s[0] != '"') return NULL;
  json_unquote(r.s, r.n, 0, out);
  return buf_cstr(out);
}

/* ---------------------------------------------------------------- base64 */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(buf *b, const unsigned char *s, size_t n) {
  buf_reserve(b, (n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    char q[4] = {b64chars[v >> 18], b64chars[(v >> 12) & 63], b64chars[(v >> 6) & 63], b64chars[v & 63]};
    buf_add(b, q, 4);
  }
  if (i < n) {
    uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
    char q[4] = {b64chars[v >> 18], b64chars[(v >> 12) & 63], i + 1 < n ? b64chars[(v >> 6) & 63] : '=', '='};
    buf_add(b, q, 4);
  }
}

static int b64val(unsigned char c) {
  const char *p = c ? strchr(b64chars, c) : NULL;
  return p ? (int)(p - b64chars) : -1;
}

/* base64.StdEncoding.Decode (padding required, \r and \n ignored); -1 with
 * Go's error text, which names the offending input byte. */
int base64_decode(const unsigned char *s, size_t n, buf *out, buf *err) {
  size_t si = 0;
  while (si < n) {
    uint32_t q[4] = {0, 0, 0, 0};
    size_t j, dlen = 4;
    long bad = -1;
    for (j = 0; j < 4; j++) {
      if (si == n) {
        if (j == 0) return 0;
        bad = (long)(si - j);
        break;
      }
      unsigned char c = s[si++];
      int v = b64val(c);
      if (v >= 0) { q[j] = (uint32_t)v; continue; }
      if (c == '\n' || c == '\r') { j--; continue; }
      if (c != '=' || j < 2) { bad = (long)si - 1; break; }
      if (j == 2) { /* "==" expected, the first one consumed */
        while (si < n && (s[si] == '\n' || s[si] == '\r')) si++;
        if (si == n) { bad = (long)n; break; }
        if (s[si] != '=') { bad = (long)si - 1; break; }
        si++;
      }
      while (si < n && (s[si] == '\n' || s[si] == '\r')) si++;
      if (si < n) bad = (long)si; /* trailing garbage, after the bytes below */
      dlen = j;
      break;
    }
    if (bad >= 0 && dlen == 4) {
      buf_fmt(err, "illegal base64 data at input byte %ld", bad);
      return -1;
    }
    uint32_t v = q[0] << 18 | q[1] << 12 | q[2] << 6 | q[3];
    unsigned char o[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    buf_add(out, o, dlen - 1);
    if (bad >= 0) {
      buf_fmt(err, "illegal base64 data at input byte %ld", bad);
      return -1;
    }
  }
  return 0;
}
