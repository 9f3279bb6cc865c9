package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
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
	if _, err := restConfig(p); err == nil || !strings.Contains(err.Error(), "--kubeconfig "+p) {
		t.Fatalf("missing kubeconfig: %v, want an error naming --kubeconfig and the file", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.kubeconfig")
	if err := os.WriteFile(bad, []byte("clusters: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := restConfig(bad); err == nil || !strings.Contains(err.Error(), "--kubeconfig "+bad) {
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
	rc, err := restConfig(good)
	if err != nil || rc.Host != "https://192.0.2.1:6443" || rc.QPS != 50 || rc.Burst != 100 {
		t.Fatalf("good kubeconfig: %+v %v", rc, err)
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
