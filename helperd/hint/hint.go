// Package hint carries "a new Pod of this Egress has this IP" from the
// helper on the Pod's Node to the helper holding the Egress's IP, while the
// Pod's CNI ADD waits.
//
// Why: the egress Node SNATs by Pod IP, and learns a Pod's IP from the API
// server only after the kubelet writes status.podIPs, which is after the
// ADD returned. Programming the Pod's own Node before the ack is not
// enough: its first packets would cross the tunnel and leave the egress
// Node un-SNATed. With the hint, both ends are programmed before the Pod
// runs. Hints expire once the informers have caught up.
//
// The wire is one small HTTP POST on the Node IP. When a gossip key is set
// the body carries an HMAC-SHA256 with it, so only helpers may send hints.
package hint

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// TTL is how long a hint counts: far longer than the kubelet takes to write
// status.podIPs and the informers to deliver it.
const TTL = 60 * time.Second

// Hint says that Pod IP, on Node NodeIP, belongs to Egress.
type Hint struct {
	Egress string     `json:"egress"`
	PodIP  netip.Addr `json:"podIP"`
	NodeIP netip.Addr `json:"nodeIP"`
}

// Validate checks a hint's fields.
func (h Hint) Validate() error {
	switch {
	case h.Egress == "" || len(h.Egress) > 253:
		return errors.New("egress: must be 1..253 characters")
	case !h.PodIP.IsValid():
		return errors.New("podIP: must be an IP address")
	case !h.NodeIP.IsValid():
		return errors.New("nodeIP: must be an IP address")
	}
	return nil
}

const sigHeader = "X-Sluice-Signature"

func sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Receiver is what the server hands hints to; it returns once the hint is
// in the datapath.
type Receiver func(ctx context.Context, h Hint) error

// Server receives hints.
type Server struct {
	Addr    string // NodeIP:port
	Key     []byte // nil: no signature required (insecure test mode)
	Receive Receiver
}

// Serve listens until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hint", s.handle)
	srv := &http.Server{Addr: s.Addr, Handler: mux, ReadTimeout: 2 * time.Second,
		WriteTimeout: 5 * time.Second, MaxHeaderBytes: 4096}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen for hints on %s: %w", s.Addr, err)
	}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
	if err != nil {
		http.Error(w, "read hint: "+err.Error(), http.StatusBadRequest)
		return
	}
	if s.Key != nil && !hmac.Equal([]byte(r.Header.Get(sigHeader)), []byte(sign(s.Key, body))) {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	var h Hint
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		http.Error(w, "decode hint: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := h.Validate(); err != nil {
		http.Error(w, "hint: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.Receive(r.Context(), h); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Client sends hints.
type Client struct {
	Key  []byte
	HTTP *http.Client
}

// Send posts h to the helper at addr (NodeIP:port) and waits for it to be
// programmed.
func (c *Client) Send(ctx context.Context, addr string, h Hint) error {
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/hint", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Key != nil {
		req.Header.Set(sigHeader, sign(c.Key, body))
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("send hint to %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("hint to %s: %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
