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

	"golang.org/x/sys/unix"
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
	Handler Handler
	// Exec runs invocations forwarded by the plugin's C front; nil answers
	// every one with ExecFallback.
	Exec      ExecHandler
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
	r := &fdReader{c: c}
	defer r.closeFDs()
	for {
		_ = c.SetDeadline(time.Now().Add(s.timeout()))
		body, err := ReadFrame(r, MaxMessageSize)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.log().Warn("bad frame, closing connection", "pid", cred.PID, "err", err)
				// After an oversize header the stream is out of step, so
				// reply once and close instead of reading on.
				_ = WriteFrame(c, errorResponse(err))
			}
			return
		}
		if IsExec(body) {
			_ = c.SetDeadline(time.Now().Add(execTimeout))
			reply := s.exec(ctx, cred, body, r.takeFDs())
			if err := writeBody(c, EncodeExecReply(reply)); err != nil {
				s.log().Warn("write exec reply", "pid", cred.PID, "err", err)
			}
			// A front sends one frame per connection: closing now spares
			// this goroutine a wake-up for the front's exit.
			return
		}
		r.closeFDs() // JSON requests carry none
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
	return Dispatch(ctx, s.Handler, req)
}

// Dispatch hands a validated request to h and builds the reply. The server
// uses it, and so does the helper when it runs the plugin in process.
func Dispatch(ctx context.Context, h Handler, req Request) Response {
	var err error
	resp := Response{Version: Version, OK: true}
	switch req.Kind {
	case KindAdd:
		err = h.Add(ctx, *req.Attachment)
	case KindDel:
		err = h.Del(ctx, *req.Key)
	case KindCheck:
		resp.Known, err = h.Check(ctx, *req.Key)
	case KindGC:
		resp.Removed, err = h.GC(ctx, req.Valid)
	case KindStatus:
		resp.Attachments = h.List(ctx)
	default:
		err = fmt.Errorf("unknown request kind %q", req.Kind)
	}
	if err != nil {
		return errorResponse(fmt.Errorf("%s: %w", req.Kind, err))
	}
	return resp
}

func errorResponse(err error) Response {
	return Response{Version: Version, OK: false, Error: err.Error()}
}

// execTimeout bounds one forwarded invocation: the plugin's own timeout is
// at most 30 s.
const execTimeout = 35 * time.Second

// execKinds maps the commands the front forwards to the request kind the
// authorizer judges.
var execKinds = map[string]Kind{"ADD": KindAdd, "DEL": KindDel, "CHECK": KindCheck}

// exec runs one forwarded invocation. Whatever cannot be run exactly as the
// exec'd plugin would run it (no handler, a bad frame, a peer the
// authorizer refuses) falls back to that plugin, which then speaks for
// itself, e.g. fails open when this helper refuses it.
func (s *Server) exec(ctx context.Context, cred PeerCred, body []byte, fds []*os.File) (reply ExecReply) {
	defer func() {
		for _, f := range fds {
			f.Close()
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			s.log().Error("exec handler panic", "panic", r)
			reply = ExecReply{Fallback: true}
		}
	}()
	req, err := DecodeExec(body)
	if err != nil {
		s.log().Warn("bad exec frame, falling back", "pid", cred.PID, "err", err)
		return ExecReply{Fallback: true}
	}
	kind, ok := execKinds[req.Env["CNI_COMMAND"]]
	if !ok || s.Exec == nil || len(fds) > 1 {
		return ExecReply{Fallback: true}
	}
	authorize := s.Authorize
	if authorize == nil {
		authorize = RootMutations
	}
	if err := authorize(cred, kind); err != nil {
		s.log().Warn("exec refused, falling back", "pid", cred.PID, "err", err)
		return ExecReply{Fallback: true}
	}
	if len(fds) == 1 {
		req.Netns = fds[0]
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	return s.Exec.Exec(ctx, req)
}

// fdReader reads a connection and keeps the file descriptors that arrive
// with the bytes (SCM_RIGHTS): a plain read would let the kernel drop them.
type fdReader struct {
	c   *net.UnixConn
	fds []*os.File
	oob [64]byte
}

func (r *fdReader) Read(p []byte) (int, error) {
	n, oobn, _, _, err := r.c.ReadMsgUnix(p, r.oob[:])
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(r.oob[:oobn])
		if perr == nil {
			for _, m := range msgs {
				fds, ferr := unix.ParseUnixRights(&m)
				if ferr != nil {
					continue
				}
				for _, fd := range fds {
					r.fds = append(r.fds, os.NewFile(uintptr(fd), "passed-fd"))
				}
			}
		}
	}
	return n, err
}

func (r *fdReader) takeFDs() []*os.File {
	fds := r.fds
	r.fds = nil
	return fds
}

func (r *fdReader) closeFDs() {
	for _, f := range r.takeFDs() {
		f.Close()
	}
}
