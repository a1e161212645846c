package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// batchSampleFile holds what src/netlink/batch.ts encodeBatch writes for the entries
// below: test/unit/netlink/batch-text.test.ts checks the same file.
const batchSampleFile = "testdata/batch-sample.txt"

func TestBatchTextDecodesEveryFieldOfEveryKind(t *testing.T) {
	sample, err := os.ReadFile(batchSampleFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeBatchText(bytes.TrimSuffix(sample, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	if r.Netns != "/var/run/netns/a b" {
		t.Fatalf("netns %q", r.Netns)
	}
	want := []batchEntry{
		{Kind: "neigh.set", Dev: "flannel.1", Group: 3, IP: "10.1.2.0", MAC: "6a:00:00:00:01:02"},
		{Kind: "fdb.append", Dev: "flannel.1", Group: 3, Dst: "172.16.0.2", MAC: "6a:00:00:00:01:02"},
		{Kind: "route.replace", Dev: "flannel.1", Group: 3, Dst: "10.1.2.0/24", Gw: "10.1.2.0", Onlink: true, Nexthop: true},
		{Kind: "route.del", Dev: "eth0", Dst: "10.9.0.0/16", Gw: "192.168.1.9", Metric: 77},
		{Kind: "nexthop.del", Dev: "flannel.1", Nhid: 12},
		{Kind: "neigh.set", Dev: "my dev", IP: "-"},
	}
	if len(r.Entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(r.Entries), len(want), r.Entries)
	}
	for i := range want {
		if r.Entries[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, r.Entries[i], want[i])
		}
	}
}

func TestBatchTextRefusesAMalformedLineNamingItsEntry(t *testing.T) {
	head := `{"netns":""}` + "\n"
	good := "neigh.del vx0 0 - - 10.0.0.1 - - 0 0\n"
	for _, bad := range []string{
		"neigh.del vx0 0 - - 10.0.0.1 - - 0",         // a field short
		"neigh.del vx0 0 - - 10.0.0.1 - - 0 0 extra", // a field more
		"neigh.del vx0 x - - 10.0.0.1 - - 0 0",       // group not a number
		"neigh.del vx0 -1 - - 10.0.0.1 - - 0 0",      // negative
		"neigh.del vx0 +5 - - 10.0.0.1 - - 0 0",      // a sign
		"neigh.del vx0 007 - - 10.0.0.1 - - 0 0",     // a leading zero
		"route.replace vx0 0 10.0.0.0/8 - - - z 0 0", // unknown flag
		"neigh.del vx%zz 0 - - 10.0.0.1 - - 0 0",     // bad escape
	} {
		_, err := decodeBatchText([]byte(head + good + bad))
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "batch entry 1:") {
			t.Errorf("%q: error %v, want EINVAL naming entry 1", bad, err)
		}
	}
	if _, err := decodeBatchText([]byte("not json\n" + good)); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad header: error %v", err)
	}
	r, err := decodeBatchText([]byte(`{"netns":""}`))
	if err != nil || len(r.Entries) != 0 {
		t.Errorf("no entries: %v %+v", err, r.Entries)
	}
}
