package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/config"
	"github.com/sluicenet/sluice/helperd/hint"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// hintHTTP is an HTTP client whose connections are made inside n, to
// redirect (when valid) instead of the address asked for, and which keeps
// the last request it sent so a test can replay it.
type hintHTTP struct {
	n        *nstest.NS
	redirect netip.AddrPort
	mu       sync.Mutex
	lastBody []byte
	lastSig  string
}

func (h *hintHTTP) client() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h.redirect.IsValid() {
			addr = h.redirect.String()
		}
		var c net.Conn
		err := h.n.Do(func() (err error) {
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 3 * time.Second, Transport: recorder{h, &http.Transport{DialContext: dial, DisableKeepAlives: true}}}
}

type recorder struct {
	h    *hintHTTP
	next http.RoundTripper
}

func (r recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	r.h.mu.Lock()
	r.h.lastBody, r.h.lastSig = body, req.Header.Get("X-Sluice-Signature")
	r.h.mu.Unlock()
	req.Body = io.NopCloser(bytes.NewReader(body))
	return r.next.RoundTrip(req)
}

// replay posts the last recorded request again, byte for byte.
func (h *hintHTTP) replay(addr string) error {
	h.mu.Lock()
	body, sig := h.lastBody, h.lastSig
	h.mu.Unlock()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/hint", bytes.NewReader(body))
	req.Header.Set("X-Sluice-Signature", sig)
	resp, err := h.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// TestHintAuthentication attacks the hint port of the Node holding an
// egress IP: a LAN host without the key, a LAN host with it forging a
// Node, a replayed hint, a stale one, one for another Node, and a Node
// naming another Node's Pod or a Pod no Egress selects. None of them may
// put an IP into the Egress's SNAT set on the holder; a real new Pod's
// hint still gets through.
func TestHintAuthentication(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	ipProd := netip.MustParseAddr("192.0.2.201")
	addAddr(t, c, "node-a", ipProd)
	for _, ns := range []string{"prod", "other"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	prodA := mustPod(t, c, "node-a", "prod", "web-a", nil)
	prodC := mustPod(t, c, "node-c", "prod", "web-c", nil)
	otherC := mustPod(t, c, "node-c", "other", "web-c", nil)
	createEgress(t, c, staticEgress("egress-prod", ipProd.String(), "prod", nil))
	expectSource(t, c, prodC, ipProd, converge)

	raw, err := os.ReadFile(filepath.Join(c.Dir, "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	gossipKey, err := base64.StdEncoding.DecodeString(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	key, err := hint.DeriveKey(gossipKey)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := c.AddHost("rogue", netip.MustParseAddr("192.0.2.66"))
	if err != nil {
		t.Fatal(err)
	}
	nodeA, nodeB, nodeC := c.Node("node-a"), c.Node("node-b"), c.Node("node-c")
	holder := netip.AddrPortFrom(nodeA.IP, config.DefaultHintPort).String()
	forged := netip.MustParseAddr("10.244.200.99") // an IP no Pod has, in no Node's podCIDR
	fromC := &hintHTTP{n: nodeC.NS}
	signedC := &hint.Client{Key: key, HTTP: fromC.client()}
	hc := func(ns, pod string, ip netip.Addr) hint.Hint {
		return hint.Hint{Namespace: ns, Pod: pod, PodIP: ip, Sender: nodeC.Name, NodeIP: nodeC.IP}
	}
	for _, a := range []struct {
		name string
		send func() error
		want string
	}{
		{"LAN host without the key", func() error {
			return (&hint.Client{HTTP: (&hintHTTP{n: rogue}).client()}).Send(ctx, holder, hc("prod", "web-c", forged))
		}, "bad signature"},
		{"LAN host with the key, forging node-c", func() error {
			return (&hint.Client{Key: key, HTTP: (&hintHTTP{n: rogue}).client()}).Send(ctx, holder, hc("prod", "web-c", forged))
		}, "sent from 192.0.2.66"},
		{"node-c naming node-a's Pod", func() error {
			return signedC.Send(ctx, holder, hc("prod", prodA.Name, forged))
		}, `scheduled to "node-a"`},
		{"node-c giving its Pod an IP outside its podCIDR", func() error {
			return signedC.Send(ctx, holder, hc("prod", prodC.Name, forged))
		}, "outside node node-c's podCIDRs"},
		{"node-c's hint for node-b delivered to node-a", func() error {
			redirected := &hintHTTP{n: nodeC.NS, redirect: netip.AddrPortFrom(nodeA.IP, config.DefaultHintPort)}
			return (&hint.Client{Key: key, HTTP: redirected.client()}).Send(ctx, netip.AddrPortFrom(nodeB.IP, config.DefaultHintPort).String(), hc("prod", prodC.Name, prodC.IP))
		}, "recipient " + nodeB.IP.String()},
		{"a stale hint", func() error {
			old := &hint.Client{Key: key, HTTP: fromC.client(), Now: func() time.Time { return time.Now().Add(-time.Minute) }}
			return old.Send(ctx, holder, hc("prod", prodC.Name, prodC.IP))
		}, "from this Node's clock"},
		{"a replayed hint", func() error {
			// A genuine hint (the Pod's own IP) is taken once...
			if err := signedC.Send(ctx, holder, hc("other", otherC.Name, otherC.IP)); err != nil {
				return fmt.Errorf("genuine hint refused: %w", err)
			}
			return fromC.replay(holder) // ...and never again
		}, "replayed"},
	} {
		err := a.send()
		if err == nil || !strings.Contains(err.Error(), a.want) {
			t.Errorf("%s: got %v, want a refusal naming %q", a.name, err, a.want)
		}
	}

	// The kernel of the holder: the forged IP and the unselected Pod (whose
	// genuine hint was taken) are in no SNAT set.
	set := nodeRunOut(t, c, "node-a", "ipset", "list", datapath.EgressSetName("egress-prod"))
	for _, ip := range []netip.Addr{forged, otherC.IP} {
		if strings.Contains(set, ip.String()+"\n") {
			t.Errorf("node-a's SNAT set holds %s:\n%s", ip, set)
		}
	}
	if !strings.Contains(set, prodC.IP.String()) {
		t.Fatalf("node-a's SNAT set lacks the selected %s:\n%s", prodC.IP, set)
	}
	// A real new Pod's hint still gets through, and its first connection
	// leaves with the egress IP.
	fresh := mustPod(t, c, "node-c", "prod", "web-new", nil)
	if got, err := c.Whoami(ctx, fresh); err != nil || got != ipProd {
		t.Errorf("new Pod's first connection: %v %v, want %s", got, err, ipProd)
	}
	eventually(t, converge, "hint counters on node-a", func() error {
		body := scrape(t, c, "node-a")
		for result, min := range map[string]float64{"ok": 2, "bad-signature": 1, "refused": 6} {
			key := fmt.Sprintf(`sluice_hints_received_total{result=%q}`, result)
			if v, ok := metric(body, key); !ok || v < min {
				return fmt.Errorf("%s = %v (found %v), want >= %v", key, v, ok, min)
			}
		}
		return nil
	})
}

func nodeRunOut(t *testing.T, c *cluster.Cluster, node, name string, args ...string) string {
	t.Helper()
	out, err := c.Exec(context.Background(), node, name, args...)
	if err != nil {
		t.Fatalf("%s %v on %s: %v\n%s", name, args, node, err, out)
	}
	return out
}
