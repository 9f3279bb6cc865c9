package binaries

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// Progress receives the progress lines printed while building. A cold
// kube-apiserver build takes minutes, so silence would look like a hang.
var Progress io.Writer = os.Stderr

// modulePath identifies the repository root's go.mod.
const modulePath = "github.com/sluicenet/sluice"

// Ensure returns the absolute path of tool, building it first when the
// cache does not hold it yet. For CNIPlugins it returns the directory of
// plugins. Concurrent callers, in this process or in other test binaries,
// are serialised on a lock file so that each binary is built once.
func Ensure(ctx context.Context, tool Tool) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return ensureIn(ctx, root, tool)
}

// ensureIn is Ensure for the repository at root.
func ensureIn(ctx context.Context, root string, tool Tool) (string, error) {
	result, steps, err := plan(root, tool)
	if err != nil {
		return "", err
	}
	if len(missing(steps)) == 0 {
		return result, nil
	}
	lockPath := filepath.Join(root, ".cache", "bin.lock")
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return "", fmt.Errorf("create cache dir: %w", err)
	}
	lock := flock.New(lockPath)
	locked, err := lock.TryLockContext(ctx, 500*time.Millisecond)
	if err != nil || !locked {
		return "", fmt.Errorf("lock %s: %w", lockPath, errors.Join(err, ctx.Err()))
	}
	defer func() { _ = lock.Unlock() }()
	// Another builder may have finished while we waited for the lock.
	for _, s := range missing(steps) {
		if err := build(ctx, tool, s); err != nil {
			return "", err
		}
	}
	return result, nil
}

// missing returns the steps whose output is not in the cache. Outputs only
// ever appear through an atomic rename, so a present file is complete.
func missing(steps []step) []step {
	var out []step
	for _, s := range steps {
		if fi, err := os.Stat(s.out); err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			out = append(out, s)
		}
	}
	return out
}

// build runs one `go build` into a temporary file next to the target and
// renames it into place, so a killed build never leaves half a binary.
func build(ctx context.Context, tool Tool, s step) error {
	if err := os.MkdirAll(filepath.Dir(s.out), 0o755); err != nil {
		return fmt.Errorf("create cache dir: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", s.out, os.Getpid())
	defer func() { _ = os.Remove(tmp) }()
	goBin, err := goTool()
	if err != nil {
		return err
	}
	args := []string{"build", "-C", s.dir, "-trimpath", "-o", tmp}
	if s.ldflags != "" {
		args = append(args, "-ldflags="+s.ldflags)
	}
	if s.tags != "" {
		args = append(args, "-tags="+s.tags)
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, s.pkg)...)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "GOWORK=off")
	// Own process group, killed with the caller: nothing outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out

	start := time.Now()
	fmt.Fprintf(Progress, "binaries: building %s (%s) from the Go module proxy; a cold build takes minutes\n", filepath.Base(s.out), tool)
	stop := ticker(start, filepath.Base(s.out))
	err = cmd.Run()
	stop()
	if err != nil {
		return fmt.Errorf("build %s: %w: %s", s.pkg, err, out.String())
	}
	if err := os.Rename(tmp, s.out); err != nil {
		return fmt.Errorf("install %s: %w", s.out, err)
	}
	fmt.Fprintf(Progress, "binaries: built %s in %s\n", s.out, time.Since(start).Round(time.Second))
	return nil
}

// ticker prints a line every 30 s until the returned func is called.
func ticker(start time.Time, name string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(Progress, "binaries: still building %s (%s)\n", name, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// goTool finds the go command: the one on PATH, else the toolchain's own.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if g := os.Getenv("GOROOT"); g != "" {
		return filepath.Join(g, "bin", "go"), nil
	}
	return "", errors.New("no go command on PATH and GOROOT unset")
}

// RepoRoot returns the directory of the repository's go.mod: from this
// source file's location when it is known (not with -trimpath), else from
// `go env GOMOD` in the working directory.
func RepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if isRepoRoot(root) {
			return root, nil
		}
	}
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if !isRepoRoot(root) {
		return "", fmt.Errorf("cannot find the %s repository root (go env GOMOD gave %q)", modulePath, root)
	}
	return root, nil
}

func isRepoRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first) == "module "+modulePath
}
