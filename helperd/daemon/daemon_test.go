package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/sluicenet/sluice/helperd/config"
	"github.com/sluicenet/sluice/pkg/iptbackend"
)

func TestReadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := bytes.Repeat([]byte{0xA5}, 32) // not valid base64, so taken raw
	b64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))

	if k, err := readKeys(""); err != nil || k != nil {
		t.Fatalf("no key file: %v %v, want none (gossip unencrypted, if allowed)", k, err)
	}
	if k, err := readKeys(write("raw", raw)); err != nil || len(k) != 1 || !bytes.Equal(k[0], raw) {
		t.Fatalf("raw 32 bytes: %x %v", k, err)
	}
	if k, err := readKeys(write("b64", []byte(b64+"\n"))); err != nil || len(k) != 1 || !bytes.Equal(k[0], bytes.Repeat([]byte{7}, 16)) {
		t.Fatalf("base64 of 16 bytes with a newline: %x %v", k, err)
	}
	for name, content := range map[string][]byte{
		"short raw":    bytes.Repeat([]byte{0xA5}, 20),
		"base64 of 20": []byte(base64.StdEncoding.EncodeToString(make([]byte, 20))),
		"empty":        nil,
		"base64 of 33": []byte(base64.StdEncoding.EncodeToString(make([]byte, 33))),
	} {
		p := write(strings.ReplaceAll(name, " ", "-"), content)
		_, err := readKeys(p)
		if err == nil || !strings.Contains(err.Error(), "--gossip-key-file") || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming the flag and the file", name, err)
		}
	}
	if _, err := readKeys(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "--gossip-key-file") {
		t.Errorf("missing file: %v, want an error naming the flag", err)
	}
}

func TestRestConfigNamesTheFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.kubeconfig")
	if _, err := restConfig(p, 50, 100); err == nil || !strings.Contains(err.Error(), "--kubeconfig "+p) {
		t.Fatalf("missing kubeconfig: %v, want an error naming --kubeconfig and the file", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.kubeconfig")
	if err := os.WriteFile(bad, []byte("clusters: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := restConfig(bad, 50, 100); err == nil || !strings.Contains(err.Error(), "--kubeconfig "+bad) {
		t.Fatalf("unparsable kubeconfig: %v", err)
	}
	good := filepath.Join(t.TempDir(), "good.kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(good, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := restConfig(good, 50, 100)
	if err != nil || rc.Host != "https://192.0.2.1:6443" || rc.QPS != 50 || rc.Burst != 100 {
		t.Fatalf("good kubeconfig: %+v %v", rc, err)
	}
}

// In the cluster (no --kubeconfig) the client gets the same rate as with
// one: client-go's default of 5 QPS would make status writes for many
// Egresses crawl.
func TestRestConfigRateInEveryMode(t *testing.T) {
	defer func(f func() (*rest.Config, error)) { inClusterConfig = f }(inClusterConfig)
	inClusterConfig = func() (*rest.Config, error) { return &rest.Config{Host: "https://192.0.2.1:443"}, nil }
	rc, err := restConfig("", 80, 160)
	if err != nil || rc.Host != "https://192.0.2.1:443" || rc.QPS != 80 || rc.Burst != 160 {
		t.Fatalf("in cluster: %+v %v, want QPS 80 and burst 160", rc, err)
	}
	inClusterConfig = func() (*rest.Config, error) { return nil, errors.New("no service account") }
	if _, err := restConfig("", 80, 160); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("outside a cluster: %v, want an error naming --kubeconfig", err)
	}
}

func TestWaitNodeIP(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "node-a"},
		{Type: corev1.NodeInternalIP, Address: "192.0.2.11"},
	}}}
	kube := fake.NewSimpleClientset(node, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}})
	ip, err := waitNodeIP(context.Background(), kube, "node-a")
	if err != nil || ip.String() != "192.0.2.11" {
		t.Fatalf("node-a: %v %v", ip, err)
	}
	for _, name := range []string{"bare", "missing"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := waitNodeIP(ctx, kube, name)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "node "+name) {
			t.Errorf("%s: %v, want an error naming the node once the wait ends", name, err)
		}
	}
	// A Node that gets its InternalIP later is waited for.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ip, err := waitNodeIP(ctx, kube, "bare")
		if err == nil && ip.String() != "192.0.2.12" {
			t.Errorf("bare: got %v", ip)
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	bare := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "192.0.2.12"},
	}}}
	if _, err := kube.CoreV1().Nodes().Update(context.Background(), bare, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("bare, once it has an InternalIP: %v", err)
	}
}

// --resync reaches the datapath: how long it trusts its record before it
// reads the kernel back in full, which is what repairs drift.
func TestDatapathConfigFollowsTheFlags(t *testing.T) {
	fs := flag.NewFlagSet("helperd", flag.ContinueOnError)
	cfg := config.Bind(fs)
	if err := fs.Parse([]string{"--resync=10s", "--tunnel-port=8999", "--held-ip-lifetime=0", "--restart-grace=0"}); err != nil {
		t.Fatal(err)
	}
	dc := datapathConfig(cfg, "eth0", netip.MustParseAddr("192.0.2.11"), iptbackend.Backend{})
	if dc.ResyncPeriod != 15*time.Second || dc.TunnelPort != 8999 || dc.HeldLifetime != -1 || dc.Uplink != "eth0" {
		t.Fatalf("datapath config %+v: want ResyncPeriod 15s (1.5 × --resync), tunnel port 8999, lifetime forever (-1)", dc)
	}
}
