package main

// The batch.apply request as text: at 5,000 peers (15,000 entries) decoding
// a JSON object per entry with encoding/json cost half as much CPU as the
// kernel's own work. The TypeScript side (src/netlink/batch.ts,
// encodeBatch) writes, and this file reads:
//
//	line 1:  {"netns":"<path>"}                       (JSON: paths may hold anything)
//	then one entry per line, batchFields fields separated by one space:
//	         kind dev group dst gw ip mac flags metric nhid
//
// An absent field is "-"; a field holding a space, a control character, "%"
// or exactly "-" is percent-encoded (encodeURIComponent); flags is "-" or letters: o = onlink,
// n = through a nexthop object; group, metric and nhid are decimal (0 =
// none). A line that does not parse fails the whole request (EINVAL, naming
// the entry): the TypeScript side never writes one.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// Field positions of one entry line; src/netlink/batch.ts writes the same order.
const (
	fieldKind = iota
	fieldDev
	fieldGroup
	fieldDst
	fieldGw
	fieldIP
	fieldMAC
	fieldFlags
	fieldMetric
	fieldNhid
	batchFields
)

func decodeBatchText(raw []byte) (batchReq, error) {
	var r batchReq
	head, body, _ := bytes.Cut(raw, []byte{'\n'})
	if err := json.Unmarshal(head, &r.nsReq); err != nil {
		return r, fmt.Errorf("bad request: batch header: %w", syscall.EINVAL)
	}
	text := string(body)
	r.Entries = make([]batchEntry, 0, strings.Count(text, "\n")+1)
	var f [batchFields]string
	for i := 0; len(text) > 0; i++ {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		e, err := decodeLine(line, f[:])
		if err != nil {
			return r, fmt.Errorf("bad request: batch entry %d: %v: %w", i, err, syscall.EINVAL)
		}
		r.Entries = append(r.Entries, e)
	}
	return r, nil
}

// decodeLine reads one entry line, using f for its fields.
func decodeLine(line string, f []string) (batchEntry, error) {
	if err := splitFields(line, f); err != nil {
		return batchEntry{}, err
	}
	return entryOf(f)
}

// splitFields splits one line into exactly len(f) fields, decoding each.
func splitFields(line string, f []string) error {
	for k := range f {
		var tok string
		if k == len(f)-1 {
			tok = line
			if strings.IndexByte(tok, ' ') >= 0 {
				return fmt.Errorf("more than %d fields", len(f))
			}
		} else {
			var ok bool
			if tok, line, ok = strings.Cut(line, " "); !ok {
				return fmt.Errorf("%d fields, want %d", k+1, len(f))
			}
		}
		switch {
		case tok == "-":
			tok = ""
		case strings.IndexByte(tok, '%') >= 0:
			var err error
			if tok, err = url.PathUnescape(tok); err != nil {
				return fmt.Errorf("field %d: %v", k, err)
			}
		}
		f[k] = tok
	}
	return nil
}

func entryOf(f []string) (batchEntry, error) {
	e := batchEntry{Kind: f[fieldKind], Dev: f[fieldDev], Dst: f[fieldDst], Gw: f[fieldGw], IP: f[fieldIP], MAC: f[fieldMAC]}
	var err error
	if e.Group, err = number(f[fieldGroup], "group"); err != nil {
		return e, err
	}
	if e.Metric, err = number(f[fieldMetric], "metric"); err != nil {
		return e, err
	}
	if e.Nhid, err = number(f[fieldNhid], "nhid"); err != nil {
		return e, err
	}
	for _, c := range f[fieldFlags] {
		switch c {
		case 'o':
			e.Onlink = true
		case 'n':
			e.Nexthop = true
		default:
			return e, fmt.Errorf("unknown flag %q", c)
		}
	}
	return e, nil
}

func number(s, what string) (int, error) {
	if s == "" {
		return 0, nil
	}
	// Plain decimal digits only: the TypeScript side never writes a sign or
	// a leading zero, so one is a malformed request.
	n, err := strconv.Atoi(s)
	if err != nil || s[0] < '0' || s[0] > '9' || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%s %q is not a count", what, s)
	}
	return n, nil
}
