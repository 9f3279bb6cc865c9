// Package hint carries "this new Pod of mine has this IP" from the helper
// on the Pod's Node to the helper holding the IP of an Egress that selects
// it, while the Pod's CNI ADD waits.
//
// Why: the egress Node SNATs by Pod IP, and learns a Pod's IP from the API
// server only after the kubelet writes status.podIPs, which is after the
// ADD returned. Programming the Pod's own Node before the ack is not
// enough: its first packets would cross the tunnel and leave the egress
// Node un-SNATed. With the hint, both ends are programmed before the Pod
// runs. Hints expire once the informers have caught up.
//
// The wire is one small HTTP POST on the Node IP. A hint names the Pod, its
// IP, the sending Node, the recipient Node and the time it was sent, with a
// nonce; an HMAC-SHA256 over all of it, with a key derived from the gossip
// key (DeriveKey), is in a header. The server refuses a hint that is badly
// signed, older or newer than MaxSkew, replayed, addressed to another Node,
// or sent from an address that is not the sender's Node IP, and limits each
// sender's rate. Whether the Pod really is the sender's, and which Egress
// selects it, the receiver decides from the API (the Receiver): a hint never
// names an Egress.
package hint

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// TTL is how long a hint counts: far longer than the kubelet takes to write
// status.podIPs and the informers to deliver it.
const TTL = 60 * time.Second

// MaxSkew is how far a hint's time may be from the receiver's clock, either
// way: the Nodes' clocks must agree to within it (NTP does far better).
const MaxSkew = 10 * time.Second

// Rate limits, per sending Node: a Node starting many Pods at once sends
// one hint per Pod and holder.
const (
	RatePerSecond = 50
	RateBurst     = 200
)

// Hint says that the Pod Namespace/Pod, on Node Sender (at NodeIP), has
// PodIP. Recipient, Time and Nonce make it good for one delivery only.
type Hint struct {
	Namespace string     `json:"namespace"`
	Pod       string     `json:"pod"`
	PodIP     netip.Addr `json:"podIP"`
	Sender    string     `json:"sender"`
	NodeIP    netip.Addr `json:"nodeIP"`
	Recipient netip.Addr `json:"recipient"`
	Time      time.Time  `json:"time"`
	Nonce     string     `json:"nonce"`
}

// Validate checks a hint's fields.
func (h Hint) Validate() error {
	switch {
	case h.Namespace == "" || len(h.Namespace) > 63:
		return errors.New("namespace: must be 1..63 characters")
	case h.Pod == "" || len(h.Pod) > 253:
		return errors.New("pod: must be 1..253 characters")
	case !h.PodIP.IsValid():
		return errors.New("podIP: must be an IP address")
	case h.Sender == "" || len(h.Sender) > 253:
		return errors.New("sender: must be 1..253 characters")
	case !h.NodeIP.IsValid():
		return errors.New("nodeIP: must be an IP address")
	case !h.Recipient.IsValid():
		return errors.New("recipient: must be an IP address")
	case h.Time.IsZero():
		return errors.New("time: required")
	case len(h.Nonce) != 32:
		return errors.New("nonce: must be 32 hex digits")
	}
	return nil
}

// DeriveKey derives the hint key from the gossip key, so that the two are
// never the same secret (HKDF-SHA256, RFC 5869).
func DeriveKey(gossipKey []byte) ([]byte, error) {
	if gossipKey == nil {
		return nil, nil
	}
	return hkdf.Key(sha256.New, gossipKey, nil, "sluice hint v2", 32)
}

// Keyring holds the hint keys derived from the gossip keys: the first
// signs, each one verifies. Set swaps them while servers and clients run,
// so the hint keys follow a gossip key rotation. Safe for concurrent use.
type Keyring struct {
	keys atomic.Pointer[[][]byte]
}

// NewKeyring derives a hint key from each gossip key.
func NewKeyring(gossipKeys [][]byte) (*Keyring, error) {
	k := &Keyring{}
	return k, k.Set(gossipKeys)
}

// Set replaces the keys: gossipKeys[0] signs from now on.
func (k *Keyring) Set(gossipKeys [][]byte) error {
	if len(gossipKeys) == 0 {
		return errors.New("hint keyring: no key")
	}
	keys := make([][]byte, 0, len(gossipKeys))
	for _, g := range gossipKeys {
		d, err := DeriveKey(g)
		if err != nil {
			return fmt.Errorf("hint keyring: %w", err)
		}
		keys = append(keys, d)
	}
	k.keys.Store(&keys)
	return nil
}

// keyringOf is keys, or else a keyring of the one derived key, or nil (no
// signatures) when there is neither.
func keyringOf(keys *Keyring, key []byte) *Keyring {
	if keys != nil || key == nil {
		return keys
	}
	k := &Keyring{}
	k.keys.Store(&[][]byte{key})
	return k
}

func (k *Keyring) signing() []byte { return (*k.keys.Load())[0] }

func (k *Keyring) verifies(body []byte, sig string) bool {
	for _, key := range *k.keys.Load() {
		if hmac.Equal([]byte(sig), []byte(sign(key, body))) {
			return true
		}
	}
	return false
}

const sigHeader = "X-Sluice-Signature"

func sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Receiver is what the server hands an authenticated hint to; it checks the
// hint against the API (the Pod is the sender's) and returns once the hint
// is in the datapath. An error wrapping ErrRefused is answered 403.
type Receiver func(ctx context.Context, h Hint) error

// ErrRefused marks a hint the Receiver will not take.
var ErrRefused = errors.New("hint refused")

// Server receives hints.
type Server struct {
	Addr string     // NodeIP:port
	Self netip.Addr // this Node's IP: hints to any other recipient are refused
	Key  []byte     // nil: no signature required (--gossip-insecure, unit tests)
	// Keys, when set, replaces Key: a hint signed with any of them counts.
	Keys *Keyring
	// IsNode reports whether a Node of that name has that IP (the API's
	// view). Nil accepts any sender (unit tests).
	IsNode  func(name string, ip netip.Addr) bool
	Receive Receiver
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observe, when set, is told the result of every hint (Result*).
	Observe func(result string)

	mu       sync.Mutex
	limiters map[netip.Addr]*rate.Limiter
	seen     map[string]time.Time // nonce → when it may be forgotten
	pruned   time.Time
}

// Serve listens until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{Addr: s.Addr, Handler: s.Handler(), ReadTimeout: 2 * time.Second,
		ReadHeaderTimeout: 2 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 4096}
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

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/hint", s.handle)
	return mux
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Results of a received hint, as Server.Observe reports them.
const (
	ResultOK           = "ok"
	ResultRateLimited  = "rate-limited"
	ResultBadSignature = "bad-signature"
	ResultInvalid      = "invalid"
	ResultRefused      = "refused" // wrong recipient, sender, time or a replay; or the Receiver refused
	ResultError        = "error"   // the Receiver failed (the datapath)
)

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	code, result, msg := s.receive(r)
	if s.Observe != nil {
		s.Observe(result)
	}
	if code == http.StatusNoContent {
		w.WriteHeader(code)
		return
	}
	http.Error(w, msg, code)
}

func (s *Server) receive(r *http.Request) (code int, result, msg string) {
	from, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return http.StatusBadRequest, ResultInvalid, "remote address: " + err.Error()
	}
	if !s.allow(from.Addr().Unmap()) {
		return http.StatusTooManyRequests, ResultRateLimited, "too many hints from " + from.Addr().String()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4097))
	if err != nil || len(body) > 4096 {
		return http.StatusBadRequest, ResultInvalid, fmt.Sprintf("read hint: %v (at most 4096 bytes)", err)
	}
	if kr := keyringOf(s.Keys, s.Key); kr != nil && !kr.verifies(body, r.Header.Get(sigHeader)) {
		return http.StatusForbidden, ResultBadSignature, "bad signature"
	}
	var h Hint
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return http.StatusBadRequest, ResultInvalid, "decode hint: " + err.Error()
	}
	if err := h.Validate(); err != nil {
		return http.StatusBadRequest, ResultInvalid, "hint: " + err.Error()
	}
	if err := s.check(h, from.Addr().Unmap()); err != nil {
		return http.StatusForbidden, ResultRefused, "hint: " + err.Error()
	}
	if err := s.Receive(r.Context(), h); err != nil {
		if errors.Is(err, ErrRefused) {
			return http.StatusForbidden, ResultRefused, err.Error()
		}
		return http.StatusServiceUnavailable, ResultError, err.Error()
	}
	return http.StatusNoContent, ResultOK, ""
}

// check refuses a hint for another Node, from the wrong address, outside
// the time window, or seen before; it then remembers the nonce.
func (s *Server) check(h Hint, from netip.Addr) error {
	now := s.now()
	switch {
	case h.Recipient.Unmap() != s.Self:
		return fmt.Errorf("recipient %v: this Node is %v", h.Recipient, s.Self)
	case h.NodeIP.Unmap() != from:
		return fmt.Errorf("nodeIP %v: sent from %v", h.NodeIP, from)
	case s.IsNode != nil && !s.IsNode(h.Sender, h.NodeIP.Unmap()):
		return fmt.Errorf("sender %q at %v: no such Node", h.Sender, h.NodeIP)
	case h.Time.Before(now.Add(-MaxSkew)) || h.Time.After(now.Add(MaxSkew)):
		return fmt.Errorf("time %s: more than %v from this Node's clock (%s)", h.Time.Format(time.RFC3339Nano), MaxSkew, now.Format(time.RFC3339Nano))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]time.Time{}
	}
	if now.Sub(s.pruned) > time.Second {
		s.pruned = now
		for n, until := range s.seen {
			if now.After(until) {
				delete(s.seen, n)
			}
		}
	}
	if _, ok := s.seen[h.Nonce]; ok {
		return fmt.Errorf("nonce %s: replayed", h.Nonce)
	}
	// A nonce need only be kept while its hint's time is in the window.
	s.seen[h.Nonce] = h.Time.Add(MaxSkew)
	return nil
}

// allow takes one token from the sender address's bucket.
func (s *Server) allow(from netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limiters == nil {
		s.limiters = map[netip.Addr]*rate.Limiter{}
	}
	l, ok := s.limiters[from]
	if !ok {
		if len(s.limiters) > 4096 {
			clear(s.limiters) // bounded memory; a flood of sources only resets buckets
		}
		l = rate.NewLimiter(RatePerSecond, RateBurst)
		s.limiters[from] = l
	}
	return l.AllowN(s.now(), 1)
}

// Client sends hints.
type Client struct {
	Key []byte
	// Keys, when set, replaces Key: hints are signed with its first key.
	Keys *Keyring
	HTTP *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Send fills h's Recipient (from addr), Time and Nonce, posts it to the
// helper at addr (NodeIP:port) and waits for it to be programmed.
func (c *Client) Send(ctx context.Context, addr string, h Hint) error {
	to, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("hint recipient %q: %w", addr, err)
	}
	h.Recipient = to.Addr()
	h.Time = time.Now()
	if c.Now != nil {
		h.Time = c.Now()
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	h.Nonce = hex.EncodeToString(nonce)
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return c.post(ctx, addr, body)
}

// post sends a body as it is (Send builds it; tests replay one).
func (c *Client) post(ctx context.Context, addr string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/hint", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if kr := keyringOf(c.Keys, c.Key); kr != nil {
		req.Header.Set(sigHeader, sign(kr.signing(), body))
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
