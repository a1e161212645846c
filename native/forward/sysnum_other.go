//go:build !amd64 && !arm64

package main

// Unknown here: stdinFrom falls back to an unlinked temporary file.
const sysMemfdCreate = 0
