package binaries

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncWriter lets several goroutines write progress lines.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Several concurrent callers on an empty cache build each binary once and
// all get the complete directory. It builds the CNI plugins (seconds, from
// the Go build cache) into a scratch copy of the repository layout.
func TestEnsureConcurrentBuildsOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the CNI plugins")
	}
	real, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+modulePath+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "integration"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(real, "integration", "tools"), filepath.Join(root, "integration", "tools")); err != nil {
		t.Fatal(err)
	}
	w := &syncWriter{}
	old := Progress
	Progress = w
	t.Cleanup(func() { Progress = old })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const callers = 3
	paths := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = ensureIn(ctx, root, CNIPlugins)
		}()
	}
	wg.Wait()
	want := filepath.Join(root, ".cache", "bin", specs[CNIPlugins].cacheKey)
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if paths[i] != want {
			t.Errorf("caller %d got %s, want %s", i, paths[i], want)
		}
	}
	for _, o := range specs[CNIPlugins].outputs {
		fi, err := os.Stat(filepath.Join(want, o.name))
		if err != nil || fi.Mode().Perm()&0o100 == 0 {
			t.Errorf("%s missing or not executable: %v", o.name, err)
		}
	}
	if n := strings.Count(w.String(), "binaries: built "); n != len(specs[CNIPlugins].outputs) {
		t.Errorf("built %d binaries, want each of %d once:\n%s", n, len(specs[CNIPlugins].outputs), w)
	}
	entries, _ := os.ReadDir(want)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	// A second call finds everything cached and builds nothing.
	before := w.String()
	if _, err := ensureIn(ctx, root, CNIPlugins); err != nil {
		t.Fatal(err)
	}
	if w.String() != before {
		t.Errorf("a cached tool was rebuilt: %s", strings.TrimPrefix(w.String(), before))
	}
}
