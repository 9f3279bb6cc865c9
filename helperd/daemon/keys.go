package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicenet/sluice/helperd/hint"
	"github.com/sluicenet/sluice/pkg/gossip"

	"k8s.io/apimachinery/pkg/util/wait"
)

// readKeys reads the gossip keys from --gossip-key-file: one key per line,
// each the base64 of 16, 24 or 32 bytes, the first the one this helper
// encrypts and signs with, the others only accepted (for a rotation; blank
// lines and lines starting with # are skipped). A file that is exactly 16,
// 24 or 32 raw bytes is one key. No path: no key.
func readKeys(path string) ([][]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	keys, err := parseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file %s: %w", path, err)
	}
	return keys, nil
}

func parseKeys(b []byte) ([][]byte, error) {
	keys, err := parseKeyLines(b)
	if (err != nil || len(keys) == 0) && gossip.ValidKeyLen(len(b)) {
		return [][]byte{b}, nil // one raw key
	}
	if err == nil && len(keys) == 0 {
		err = fmt.Errorf("no key: want 16, 24 or 32 bytes (raw or base64), got %d", len(b))
	}
	return keys, err
}

// parseKeyLines reads one base64 key per line, skipping blank lines and
// comments.
func parseKeyLines(b []byte) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		switch {
		case err != nil:
			return nil, fmt.Errorf("line %d: not base64: %v", i+1, err)
		case !gossip.ValidKeyLen(len(k)):
			return nil, fmt.Errorf("line %d: %d bytes, want 16, 24 or 32 (raw or base64)", i+1, len(k))
		case slices.ContainsFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) }):
			return nil, fmt.Errorf("line %d: the same key twice", i+1)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// fingerprints names keys in logs without revealing them.
func fingerprints(keys [][]byte) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		sum := sha256.Sum256(k)
		out[i] = hex.EncodeToString(sum[:4])
	}
	return strings.Join(out, ",")
}

// keyReloadEvery is how often the key file is read again. The kubelet
// updates a mounted Secret within about a minute; this adds little.
const keyReloadEvery = 2 * time.Second

// keyWatcher reloads the gossip keys when the key file changes and hands
// them to gossip and to the hint keyring. A file that does not parse is
// logged, naming the file, and counted; the keys in use stay.
type keyWatcher struct {
	path    string
	gossip  interface{ SetKeys([][]byte) error }
	hints   *hint.Keyring
	log     *slog.Logger
	reloads *prometheus.CounterVec // result: ok, error
	keys    prometheus.Gauge

	last []byte // the file's content when last applied
}

func newKeyWatcher(path string, g interface{ SetKeys([][]byte) error }, hints *hint.Keyring, reg prometheus.Registerer, log *slog.Logger) *keyWatcher {
	w := &keyWatcher{path: path, gossip: g, hints: hints, log: log,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_gossip_key_reloads_total",
			Help: "Changes of --gossip-key-file applied (ok) or refused (error; the keys in use stay)."}, []string{"result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_gossip_keys",
			Help: "Gossip keys installed: the first encrypts, all decrypt."})}
	reg.MustRegister(w.reloads, w.keys)
	return w
}

// start records the keys the helper started with.
func (w *keyWatcher) start(keys [][]byte) {
	w.last, _ = os.ReadFile(w.path)
	w.keys.Set(float64(len(keys)))
	w.log.Info("gossip keys", "file", w.path, "keys", len(keys), "fingerprints", fingerprints(keys))
}

func (w *keyWatcher) run(ctx context.Context) {
	wait.UntilWithContext(ctx, func(context.Context) { w.check() }, keyReloadEvery)
}

// check reloads the file if its content changed.
func (w *keyWatcher) check() {
	b, err := os.ReadFile(w.path)
	if err != nil || bytes.Equal(b, w.last) {
		if err != nil {
			w.log.Warn("reread --gossip-key-file (keeping the keys in use)", "file", w.path, "err", err)
		}
		return
	}
	w.last = b
	keys, err := parseKeys(b)
	if err == nil {
		err = w.gossip.SetKeys(keys)
	}
	if err == nil {
		err = w.hints.Set(keys)
	}
	if err != nil {
		w.reloads.WithLabelValues("error").Inc()
		w.log.Error("--gossip-key-file changed but cannot be used; keeping the keys in use", "file", w.path, "err", err)
		return
	}
	w.reloads.WithLabelValues("ok").Inc()
	w.keys.Set(float64(len(keys)))
	w.log.Info("gossip keys reloaded", "file", w.path, "keys", len(keys), "fingerprints", fingerprints(keys))
}
