package main

import (
	"strings"
	"testing"
)

// A panic in an op becomes an error reply whose message stays one line:
// the message may reach a CNI error's msg on stdout, the stack may not.
func TestPanicReplyKeepsTheStackOutOfTheMessage(t *testing.T) {
	ops["test.panic"] = func([]byte) (interface{}, error) { panic("boom") }
	defer delete(ops, "test.panic")
	r := dispatch("test.panic", []byte("{}"))
	if r.OK {
		t.Fatal("a panicking op replied ok")
	}
	if r.Error != "panic in test.panic: boom" {
		t.Fatalf("message %q carries more than the panic", r.Error)
	}
	if !strings.Contains(r.Stack, "goroutine") || !strings.Contains(r.Stack, "main_test.go") {
		t.Fatalf("stack field lacks the Go stack: %q", r.Stack)
	}
}
