package cniproto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Client sends requests to the helper. Each call opens its own connection:
// the plugin is a short-lived process making one or two calls.
type Client struct {
	Path    string        // socket path; empty means DefaultSocketPath
	Timeout time.Duration // whole call: dial, write, wait for the reply; 0 means 1s
}

// UnreachableError means the helper could not be reached or did not answer
// in time, as opposed to answering with an error. The plugin fails open (or
// with "try again later") only on this.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return "helper unreachable: " + e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// IsUnreachable tells whether err is an UnreachableError.
func IsUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

// Do sends req (its Version is filled in) and returns the reply. A reply
// with OK=false comes back as an error carrying the helper's message.
func (c *Client) Do(ctx context.Context, req Request) (Response, error) {
	path := c.Path
	if path == "" {
		path = DefaultSocketPath
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, &UnreachableError{fmt.Errorf("dial %s: %w", path, err)}
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return Response{}, &UnreachableError{err}
	}
	req.Version = Version
	if err := WriteFrame(conn, req); err != nil {
		return Response{}, &UnreachableError{fmt.Errorf("send %s: %w", req.Kind, err)}
	}
	body, err := ReadFrame(conn, MaxMessageSize)
	if err != nil {
		return Response{}, &UnreachableError{fmt.Errorf("wait for %s reply: %w", req.Kind, err)}
	}
	resp, err := DecodeResponse(body)
	if err != nil {
		return Response{}, err
	}
	if !resp.OK {
		return resp, fmt.Errorf("helper refused %s: %s", req.Kind, resp.Error)
	}
	return resp, nil
}
