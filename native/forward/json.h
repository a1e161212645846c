/* Buffers, UTF-8, JSON and base64 as Go's encoding/json does them (json.c). */
#ifndef TSFLANNEL_FORWARD_JSON_H
#define TSFLANNEL_FORWARD_JSON_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer, always NUL-terminated once anything was added. */
typedef struct {
  unsigned char *p;
  size_t n, cap;
} buf;

/* A raw JSON value inside a document; s is NULL when absent. */
typedef struct {
  const unsigned char *s;
  size_t n;
} raw;

/* Out of memory: one line to stderr and exit 1 (a one-shot process). */
void die_oom(void) __attribute__((noreturn));
void buf_reserve(buf *b, size_t more);
void buf_add(buf *b, const void *s, size_t n);
void buf_str(buf *b, const char *s);
void buf_ch(buf *b, unsigned char c);
void buf_fmt(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *buf_cstr(buf *b);

static inline int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Appends s as a JSON string, escaped as encoding/json writes it. */
void json_quote(buf *b, const unsigned char *s, size_t n);
void json_quote_str(buf *b, const char *s);
/* 0 when s is one valid JSON document; else -1 and Go's message in err (if not NULL). */
int json_valid(const unsigned char *s, size_t n, buf *err);
/* The index after the (valid) value starting at s[i]. */
size_t json_skip(const unsigned char *s, size_t n, size_t i);
/* Decodes the (valid) string at s[i] == '"' into out; the index after it. */
size_t json_unquote(const unsigned char *s, size_t n, size_t i, buf *out);
/* The last top-level member named key of a valid JSON object; absent otherwise. */
/* Steps over one member of an object whose '{' ends before *i (a document
 * json_valid accepted): the key decoded into key, the raw value into val,
 * *i past the value. 0, or -1 at the closing '}' or the end. */
int json_next_member(const unsigned char *s, size_t n, size_t *i, buf *key, raw *val);
raw top_level_member(const unsigned char *s, size_t n, const char *key);
/* That member's decoded string; NULL when absent or not a string. */
const char *string_member(const unsigned char *s, size_t n, const char *key, buf *out);
void base64_encode(buf *b, const unsigned char *s, size_t n);
/* base64.StdEncoding.Decode; -1 with Go's error text in err. */
int base64_decode(const unsigned char *s, size_t n, buf *out, buf *err);

#endif
