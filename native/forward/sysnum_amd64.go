package main

// Go 1.19's syscall package lists memfd_create for arm64 but not for amd64.
const sysMemfdCreate = 319
