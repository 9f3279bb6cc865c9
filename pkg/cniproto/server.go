package cniproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Handler is what the helper implements to answer the plugin. Add must not
// return before the helper is ready for the Pod's first packet: the plugin
// holds the Pod's ADD until it gets the reply.
type Handler interface {
	Add(ctx context.Context, a Attachment) error
	Del(ctx context.Context, k Key) error
	Check(ctx context.Context, k Key) (bool, error)
	GC(ctx context.Context, valid []Key) (removed int, err error)
	List(ctx context.Context) []Attachment
}

// PeerCred is the identity of the process at the other end of a connection.
type PeerCred struct {
	PID, UID, GID uint32
}

// Authorizer decides whether a peer may send a request of the given kind.
type Authorizer func(PeerCred, Kind) error

// RootMutations lets only uid 0 change state; anyone who can open the
// socket (mode 0600, so root anyway unless the mode is changed) may read.
func RootMutations(c PeerCred, k Kind) error {
	if k.Mutating() && c.UID != 0 {
		return fmt.Errorf("uid %d may not send %s requests (only uid 0 may)", c.UID, k)
	}
	return nil
}

// Server answers requests on a Unix socket, one goroutine per connection.
type Server struct {
	Handler   Handler
	Authorize Authorizer    // nil means RootMutations
	Timeout   time.Duration // per request: reading it, handling it, replying; 0 means 5s
	Log       *slog.Logger  // nil means slog.Default()

	wg sync.WaitGroup
}

// Listen creates the socket at path with mode 0600, replacing a stale one
// left by an earlier helper. The parent directory is created 0700.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// chmod after bind: there is a short window with the umask's mode, but
	// the directory is 0700 so nobody else can reach the socket meanwhile.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// Serve accepts connections until ctx ends or l fails, then closes l and
// waits for the connections in flight.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return 5 * time.Second
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	cred, err := peerCred(c)
	if err != nil {
		s.log().Warn("cannot read peer credentials, closing", "err", err)
		_ = WriteFrame(c, errorResponse(fmt.Errorf("peer credentials: %w", err)))
		return
	}
	for {
		_ = c.SetDeadline(time.Now().Add(s.timeout()))
		body, err := ReadFrame(c, MaxMessageSize)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log().Warn("bad frame, closing connection", "pid", cred.PID, "err", err)
				// After an oversize header the stream is out of step, so
				// reply once and close instead of reading on.
				_ = WriteFrame(c, errorResponse(err))
			}
			return
		}
		resp := s.handle(ctx, cred, body)
		if err := WriteFrame(c, resp); err != nil {
			s.log().Warn("write reply", "pid", cred.PID, "err", err)
			return
		}
	}
}

// handle turns one request body into its reply; it never panics the server.
func (s *Server) handle(ctx context.Context, cred PeerCred, body []byte) (resp Response) {
	defer func() {
		if r := recover(); r != nil {
			s.log().Error("handler panic", "panic", r)
			resp = errorResponse(fmt.Errorf("internal error: %v", r))
		}
	}()
	req, err := DecodeRequest(body)
	if err != nil {
		return errorResponse(err)
	}
	authorize := s.Authorize
	if authorize == nil {
		authorize = RootMutations
	}
	if err := authorize(cred, req.Kind); err != nil {
		return errorResponse(fmt.Errorf("permission denied: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	resp = Response{Version: Version, OK: true}
	switch req.Kind {
	case KindAdd:
		err = s.Handler.Add(ctx, *req.Attachment)
	case KindDel:
		err = s.Handler.Del(ctx, *req.Key)
	case KindCheck:
		resp.Known, err = s.Handler.Check(ctx, *req.Key)
	case KindGC:
		resp.Removed, err = s.Handler.GC(ctx, req.Valid)
	case KindStatus:
		resp.Attachments = s.Handler.List(ctx)
	}
	if err != nil {
		return errorResponse(fmt.Errorf("%s: %w", req.Kind, err))
	}
	return resp
}

func errorResponse(err error) Response {
	return Response{Version: Version, OK: false, Error: err.Error()}
}
