// Package inspect serves sluice-helperd's status to the CLI over a
// root-only Unix socket, and holds the CLI's side.
//
// The wire is plain HTTP/1.1 with JSON bodies: it gives request size limits,
// timeouts and clear errors for free, and `curl --unix-socket` works for
// debugging.
package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Source answers the queries. The helper implements it from its last
// reconciled state; nothing here touches the kernel or the API server.
type Source interface {
	Egresses() []EgressRow
	Pods() []PodRow
	Datapath(ctx context.Context) (DatapathReport, error)
	Explain(ctx context.Context, namespace, name string) (Explanation, error)
}

// Server serves a Source on a Unix socket.
type Server struct {
	Path   string
	Source Source
	Log    *slog.Logger

	// AllowUID decides which peers may query; nil means uid 0 only.
	AllowUID func(uid uint32) bool
}

type ctxKey struct{}

// Serve listens until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("create status socket dir: %w", err)
	}
	_ = os.Remove(s.Path)
	ln, err := net.Listen("unix", s.Path)
	if err != nil {
		return fmt.Errorf("listen on status socket %s: %w", s.Path, err)
	}
	if err := os.Chmod(s.Path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod status socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/egresses", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Source.Egresses())
	})
	mux.HandleFunc("GET /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Source.Pods())
	})
	mux.HandleFunc("GET /v1/datapath", func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.Source.Datapath(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("GET /v1/explain/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		ex, err := s.Source.Explain(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
		if errors.Is(err, ErrNotFound) {
			writeError(w, http.StatusNotFound, err)
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, ex)
	})
	allow := s.AllowUID
	if allow == nil {
		allow = func(uid uint32) bool { return uid == 0 }
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uid, ok := r.Context().Value(ctxKey{}).(uint32)
			if !ok || !allow(uid) {
				writeError(w, http.StatusForbidden, fmt.Errorf("uid %d may not query sluice-helperd", uid))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 4096)
			mux.ServeHTTP(w, r)
		}),
		ReadTimeout:    5 * time.Second,
		WriteTimeout:   30 * time.Second,
		MaxHeaderBytes: 8192,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uid, err := peerUID(c); err == nil {
				return context.WithValue(ctx, ctxKey{}, uid)
			}
			return ctx
		},
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
