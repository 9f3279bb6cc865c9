package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeSource struct{}

func (fakeSource) Egresses() []EgressRow {
	return []EgressRow{{Name: "egress-prod-web", EgressIP: "192.0.2.200", Pool: "external-ip-pool", Node: "node-a", HeldHere: true, PodsHere: 2, PodsCluster: 5, Mark: "0x10000", Table: 10001}}
}
func (fakeSource) Pods() []PodRow {
	return []PodRow{{Namespace: "prod", Name: "web-1", IPs: []string{"10.244.1.5"}, HostVeth: "veth1234", Egress: "egress-prod-web", Losers: []string{"egress-b"}}}
}
func (fakeSource) Datapath(context.Context) (DatapathReport, error) {
	return DatapathReport{Node: "node-a", Tunnel: "sluice.vxlan", Counters: []Counter{{Object: "nat/SLUICE-POSTROUTING#2", Packets: 7, Bytes: 420}}}, nil
}
func (fakeSource) Explain(_ context.Context, ns, name string) (Explanation, error) {
	if ns != "prod" || name != "web-1" {
		return Explanation{}, ErrNotFound
	}
	return Explanation{Namespace: ns, Name: name, Node: "node-a", Egress: "egress-prod-web", Path: "tunnel to node-b", Table: 10001}, nil
}

func serve(t *testing.T, allow func(uint32) bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "status.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Path: path, Source: fakeSource{}, AllowUID: allow}).Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil || time.Now().After(deadline) {
			if c != nil {
				c.Close()
			}
			return path
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCLITablesAndJSON(t *testing.T) {
	path := serve(t, func(uint32) bool { return true })
	ctx := context.Background()
	var out bytes.Buffer
	if err := RunCLI(ctx, "egresses", []string{"--status-socket", path}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "egress-prod-web") || !strings.Contains(out.String(), "192.0.2.200") {
		t.Fatalf("egresses table lacks the row:\n%s", out.String())
	}
	out.Reset()
	if err := RunCLI(ctx, "pods", []string{"--status-socket", path, "-o", "json"}, &out); err != nil {
		t.Fatal(err)
	}
	var pods []PodRow
	if err := json.Unmarshal(out.Bytes(), &pods); err != nil || len(pods) != 1 || pods[0].Egress != "egress-prod-web" {
		t.Fatalf("pods -o json = %q (%v)", out.String(), err)
	}
	out.Reset()
	if err := RunCLI(ctx, "explain", []string{"prod/web-1", "--status-socket", path}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "tunnel to node-b") {
		t.Fatalf("explain output lacks the path:\n%s", out.String())
	}
	if err := RunCLI(ctx, "explain", []string{"prod/nope", "--status-socket", path}, &out); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("explain of an unknown Pod: got %v, want not found", err)
	}
	if err := RunCLI(ctx, "explain", []string{"noslash", "--status-socket", path}, &out); err == nil {
		t.Fatal("explain without NAMESPACE/POD succeeded")
	}
	if err := RunCLI(ctx, "pods", []string{"--status-socket", path, "-o", "yaml"}, &out); err == nil || !strings.Contains(err.Error(), "-o") {
		t.Fatalf("bad -o: got %v", err)
	}
}

func TestNonRootPeerIsRefused(t *testing.T) {
	path := serve(t, func(uint32) bool { return false })
	_, err := NewClient(path).Egresses(context.Background())
	if err == nil || !strings.Contains(err.Error(), "may not query") {
		t.Fatalf("got %v, want a refusal", err)
	}
}
