package cniproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Exec frames carry a whole CNI invocation from the plugin's C front
// (plugin/shim) to the helper, which runs the plugin's Go code in process:
// a Go binary costs more to start on a busy Node than sluice may add to a
// Pod's ADD. They share the socket and the length prefix with the JSON
// messages, and are told apart by their first byte (JSON never starts with
// NUL):
//
//	request: "\x00SX1" { KEY "=" VALUE "\x00" } "\x00" stdin...
//	reply:   "\x00SX1" status(1) exitCode(1) stdout...
//
// The request may carry the Pod's netns as an SCM_RIGHTS file descriptor.
// Status ExecFallback tells the front to exec the full Go plugin instead,
// which the helper answers for anything it does not run exactly as the
// plugin would.
var execMagic = []byte("\x00SX1")

// Exec reply statuses.
const (
	ExecDone     byte = 0
	ExecFallback byte = 1
)

// ExecEnv lists the environment variables the front forwards.
var ExecEnv = []string{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "CNI_NETNS_OVERRIDE", "SLUICE_CNI_DEBUG"}

// ExecRequest is one CNI invocation forwarded by the front.
type ExecRequest struct {
	Env   map[string]string
	Stdin []byte
	// Netns is the Pod's network namespace, opened by the front; nil for
	// DEL or when none was sent. The server closes it after the call.
	Netns *os.File
}

// ExecReply is the outcome: what the plugin would have printed and its
// exit code, or Fallback.
type ExecReply struct {
	Fallback bool
	ExitCode uint8
	Stdout   []byte
}

// ExecHandler runs forwarded invocations. It must answer Fallback rather
// than differ from what the exec'd plugin would do.
type ExecHandler interface {
	Exec(ctx context.Context, req ExecRequest) ExecReply
}

// IsExec tells whether a frame body is an exec request.
func IsExec(body []byte) bool { return bytes.HasPrefix(body, execMagic) }

// EncodeExec builds an exec request body (the front does the same in C;
// tests and Go callers use this).
func EncodeExec(env map[string]string, stdin []byte) []byte {
	b := append([]byte(nil), execMagic...)
	for _, k := range ExecEnv {
		if v, ok := env[k]; ok {
			b = append(append(append(append(b, k...), '='), v...), 0)
		}
	}
	b = append(b, 0)
	return append(b, stdin...)
}

// DecodeExec parses an exec request body. Only the forwarded variables are
// accepted, each at most once.
func DecodeExec(body []byte) (ExecRequest, error) {
	if !IsExec(body) {
		return ExecRequest{}, errors.New("not an exec frame")
	}
	rest := body[len(execMagic):]
	req := ExecRequest{Env: map[string]string{}}
	for {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return ExecRequest{}, errors.New("exec frame: environment not terminated")
		}
		entry := string(rest[:i])
		rest = rest[i+1:]
		if entry == "" {
			break
		}
		k, v, ok := strings.Cut(entry, "=")
		if !ok {
			return ExecRequest{}, fmt.Errorf("exec frame: environment entry %q has no '='", entry)
		}
		if !forwarded(k) {
			return ExecRequest{}, fmt.Errorf("exec frame: variable %q is not forwarded", k)
		}
		if _, dup := req.Env[k]; dup {
			return ExecRequest{}, fmt.Errorf("exec frame: variable %s twice", k)
		}
		req.Env[k] = v
	}
	req.Stdin = rest
	return req, nil
}

func forwarded(k string) bool {
	for _, f := range ExecEnv {
		if k == f {
			return true
		}
	}
	return false
}

// EncodeExecReply builds a reply body.
func EncodeExecReply(r ExecReply) []byte {
	status := ExecDone
	if r.Fallback {
		status = ExecFallback
	}
	b := append(append([]byte(nil), execMagic...), status, r.ExitCode)
	return append(b, r.Stdout...)
}

// DecodeExecReply parses a reply body.
func DecodeExecReply(body []byte) (ExecReply, error) {
	if !IsExec(body) || len(body) < len(execMagic)+2 {
		return ExecReply{}, errors.New("not an exec reply")
	}
	st, code := body[len(execMagic)], body[len(execMagic)+1]
	if st != ExecDone && st != ExecFallback {
		return ExecReply{}, fmt.Errorf("exec reply: unknown status %d", st)
	}
	return ExecReply{Fallback: st == ExecFallback, ExitCode: code, Stdout: body[len(execMagic)+2:]}, nil
}
