// Package fuzz runs the C front's parsing (plugin/shim/front.h) from Go,
// so that its fuzz tests can feed it. Each input is copied to end exactly
// at an inaccessible page: a read past the bytes the C code was given
// faults at once instead of going unnoticed.
package fuzz

/*
#cgo CFLAGS: -O2 -Wall -Wextra -Werror -I${SRCDIR}/..
#include "front.h"

static int socket_of(const char *p, size_t n, char *out, size_t cap) { return front_socket(p, n, out, cap); }

static int reply_of(const char *p, size_t n, int *code, size_t *off, size_t *outn)
{
	const char *out = NULL;
	int r = front_reply(p, n, code, &out, outn);
	*off = r == 1 ? (size_t)(out - p) : 0;
	return r;
}
*/
import "C"

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// MaxSocket is the room the front gives a socket path (sun_path).
const MaxSocket = 108

// guarded returns a copy of b that ends where an inaccessible page
// begins, and a function that unmaps it.
func guarded(b []byte) ([]byte, func(), error) {
	page := os.Getpagesize()
	n := (len(b)+page-1)/page*page + page
	m, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	if err := syscall.Mprotect(m[n-page:], syscall.PROT_NONE); err != nil {
		syscall.Munmap(m)
		return nil, nil, fmt.Errorf("mprotect: %w", err)
	}
	g := m[n-page-len(b) : n-page]
	copy(g, b)
	return g, func() { syscall.Munmap(m) }, nil
}

// ptr is the address of b's first byte, or of where it would be.
func ptr(b []byte) *C.char { return (*C.char)(unsafe.Pointer(unsafe.SliceData(b))) }

// Socket runs front_socket on conf: the socket path, and whether the
// front dials it (false: it falls back).
func Socket(conf []byte) (string, bool, error) {
	g, free, err := guarded(conf)
	if err != nil {
		return "", false, err
	}
	defer free()
	var out [MaxSocket]C.char
	if C.socket_of(ptr(g), C.size_t(len(g)), &out[0], MaxSocket) == 0 {
		return "", false, nil
	}
	return C.GoString(&out[0]), true, nil
}

// Reply runs front_reply on a reply frame: -1 incomplete, 0 fall back,
// 1 done with the exit code and stdout.
func Reply(frame []byte) (status, code int, stdout []byte, err error) {
	g, free, err := guarded(frame)
	if err != nil {
		return 0, 0, nil, err
	}
	defer free()
	var c C.int
	var off, n C.size_t
	r := int(C.reply_of(ptr(g), C.size_t(len(g)), &c, &off, &n))
	if r == 1 {
		stdout = append([]byte(nil), g[off:off+n]...)
	}
	return r, int(c), stdout, nil
}
