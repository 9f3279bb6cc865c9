package daemon

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicenet/sluice/helperd/hint"
)

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

func TestParseKeysForRotation(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	keys, err := parseKeys([]byte("# new key first\n" + b64(k2) + "\n\n" + b64(k1) + "\n"))
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[0], k2) || !bytes.Equal(keys[1], k1) {
		t.Fatalf("two keys: %x, %v", keys, err)
	}
	for name, tc := range map[string]struct{ content, want string }{
		"a bad second line": {b64(k1) + "\nnot-base64!\n", "line 2: not base64"},
		"a short key":       {b64(k1) + "\n" + b64(make([]byte, 20)) + "\n", "line 2: 20 bytes"},
		"the same key":      {b64(k1) + "\n" + b64(k1) + "\n", "line 2: the same key twice"},
		"only comments":     {"# nothing\n", "no key"},
	} {
		if _, err := parseKeys([]byte(tc.content)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

type fakeGossipKeys struct{ keys [][]byte }

func (f *fakeGossipKeys) SetKeys(k [][]byte) error { f.keys = k; return nil }

// The watcher applies a changed key file to gossip and hints, and keeps the
// keys in use when the file turns bad.
func TestKeyWatcherReloads(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	path := filepath.Join(t.TempDir(), "key")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(b64(k1) + "\n")
	g := &fakeGossipKeys{}
	hk, err := hint.NewKeyring([][]byte{k1})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w := newKeyWatcher(path, g, hk, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.start([][]byte{k1})
	w.check()
	if g.keys != nil {
		t.Fatal("an unchanged file was applied again")
	}
	write(b64(k1) + "\n" + b64(k2) + "\n")
	w.check()
	if len(g.keys) != 2 || !bytes.Equal(g.keys[0], k1) || testutil.ToFloat64(w.keys) != 2 {
		t.Fatalf("after adding k2: gossip has %d keys, gauge %v", len(g.keys), testutil.ToFloat64(w.keys))
	}
	write("garbage\n")
	w.check()
	if len(g.keys) != 2 || testutil.ToFloat64(w.reloads.WithLabelValues("error")) != 1 || testutil.ToFloat64(w.reloads.WithLabelValues("ok")) != 1 {
		t.Fatalf("a bad file: gossip has %d keys, reloads ok %v error %v", len(g.keys),
			testutil.ToFloat64(w.reloads.WithLabelValues("ok")), testutil.ToFloat64(w.reloads.WithLabelValues("error")))
	}
	write(b64(k2) + "\n")
	w.check()
	if len(g.keys) != 1 || !bytes.Equal(g.keys[0], k2) {
		t.Fatalf("after the rotation: %x", g.keys)
	}
}
