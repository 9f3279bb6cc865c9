package conflist

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startWatch runs Watch on dir until the test ends. Resync is an hour, so
// every reaction the test sees comes from file events.
func startWatch(t *testing.T, dir string) {
	t.Helper()
	log := quietLog()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Watch(ctx, WatchConfig{Dir: dir, Entry: testEntry, Resync: time.Hour, Log: log}); err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// waitForEntry polls until path holds exactly one sluice entry, last.
func waitForEntry(t *testing.T, path string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if data, err := os.ReadFile(path); err == nil {
			if doc, err := parseList(data); err == nil {
				if idx := doc.sluiceIndexes(); len(idx) == 1 && idx[0] == len(doc.plugins)-1 {
					return time.Since(start)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no sluice entry within %v", path, within)
	return 0
}

func TestWatchReappendsAfterFlannelCopy(t *testing.T) {
	orig := readTestdata(t, "10-flannel.conflist")
	dir := writeFiles(t, map[string][]byte{"10-flannel.conflist": orig}, 0o644)
	path := filepath.Join(dir, "10-flannel.conflist")
	startWatch(t, dir)
	waitForEntry(t, path, 2*time.Second)

	for i := range 3 {
		// flannel's install-cni copies its file over ours (cp: truncate+write).
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		took := waitForEntry(t, path, time.Second)
		t.Logf("rewrite %d: entry back after %v", i, took)
	}
	noTempFiles(t, dir)
	assertQuiet(t, path)
}

func TestWatchToleratesCalicoNonAtomicRewrite(t *testing.T) {
	orig := readTestdata(t, "10-calico.conflist")
	dir := writeFiles(t, map[string][]byte{"10-calico.conflist": orig, "99-loopback.conf": []byte(`{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`)}, 0o644)
	path := filepath.Join(dir, "10-calico.conflist")
	startWatch(t, dir)
	waitForEntry(t, path, 2*time.Second)

	// Calico writes in place: truncate, part of the file, a pause, the rest.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	half := len(orig) / 2
	if _, err := f.Write(orig[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the watcher sees a half-written primary
	if _, err := f.Write(orig[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("entry back after %v", waitForEntry(t, path, time.Second))
	if data := readFileT(t, filepath.Join(dir, "99-loopback.conf")); strings.Contains(string(data), PluginType) {
		t.Errorf("the file after the half-written primary was patched: %s", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "99-loopback.conflist")); err == nil {
		t.Errorf("the file after the half-written primary was converted")
	}
	noTempFiles(t, dir)
	assertQuiet(t, path)
}

func TestWatchInstallsWhenPrimaryAppears(t *testing.T) {
	dir := t.TempDir()
	startWatch(t, dir)
	path := filepath.Join(dir, "10-flannel.conflist")
	// Written atomically the way we do, so that its arrival is one event.
	if err := WriteFileAtomic(path, readTestdata(t, "10-flannel.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForEntry(t, path, time.Second)
}

// assertQuiet checks that once the entry is in place the watcher stops
// writing: its own writes must not trigger more writes. Every write of ours
// is a rename, so a write shows as a new inode. The window is longer than the
// debounce plus the quick retries the watcher may schedule.
func assertQuiet(t *testing.T, path string) {
	t.Helper()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(DefaultDebounce + 2*DefaultRetry + 300*time.Millisecond)
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("watcher rewrote %s after the entry was in place", path)
	}
}

func TestWatchStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, WatchConfig{Dir: t.TempDir(), Log: quietLog()}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("watch returned %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watch did not stop")
	}
	if err := Watch(context.Background(), WatchConfig{Dir: filepath.Join(t.TempDir(), "missing"), Log: quietLog()}); err == nil {
		t.Error("missing directory accepted")
	}
	var buf bytes.Buffer
	if err := Watch(context.Background(), WatchConfig{Dir: t.TempDir(), Entry: Entry{Timeout: "x"}, Log: slog.New(slog.NewTextHandler(&buf, nil))}); err == nil {
		t.Error("bad entry accepted")
	}
}

func TestWatchSkipsFileBrokenForGood(t *testing.T) {
	dir := writeFiles(t, map[string][]byte{
		"00-broken.conflist":  []byte(`{"name":`),
		"10-flannel.conflist": readTestdata(t, "10-flannel.conflist"),
	}, 0o644)
	path := filepath.Join(dir, "10-flannel.conflist")
	startWatch(t, dir)
	// The watcher first waits for the broken file to be completed, then
	// skips it as the runtime does.
	waitForEntry(t, path, maxRetries*DefaultRetry+time.Second)
	if got := readFileT(t, filepath.Join(dir, "00-broken.conflist")); string(got) != `{"name":` {
		t.Errorf("broken file modified: %s", got)
	}
	// A flannel restart is then handled without waiting for the broken file.
	if err := os.WriteFile(path, readTestdata(t, "10-flannel.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForEntry(t, path, time.Second)
	assertQuiet(t, path)
}

// TestWatchSurvivesDirectoryRecreated: Watch neither dies nor goes blind when
// its directory is removed and created again.
func TestWatchSurvivesDirectoryRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, WatchConfig{Dir: dir, Entry: testEntry, Resync: 200 * time.Millisecond, Log: quietLog()})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the watch start on the first directory
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "10-flannel.conflist")
	if err := os.WriteFile(path, readTestdata(t, "10-flannel.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForEntry(t, path, 2*time.Second)
	// And keeps doing so (through renewed events or the 200ms resync).
	time.Sleep(300 * time.Millisecond)
	if err := os.WriteFile(path, readTestdata(t, "10-flannel.conflist"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForEntry(t, path, time.Second)
}
