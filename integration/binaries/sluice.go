package binaries

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// PluginCFlags are how the plugin's C front is built: static, so it runs on
// any Node whatever its libc, with code and read-only data in one segment
// (fewer pages to fault in at each exec). Keep in step with the Makefile.
var PluginCFlags = []string{"-O2", "-static", "-Wall", "-Wextra", "-Werror", "-Wl,-z,noseparate-code"}

// PluginCC is the C compiler for the front: musl-gcc when there is one (a
// static musl binary starts in ~4 page faults, static glibc in ~24, and a
// fault costs ~30 us on the VMs here), else cc.
func PluginCC() string {
	if p, err := exec.LookPath("musl-gcc"); err == nil {
		return p
	}
	return "cc"
}

// BuildSluice builds this tree's binaries into dir: the plugin's C front
// as sluice, the Go plugin as sluice-full next to it, and sluice-helperd.
// It returns the path of the front.
func BuildSluice(ctx context.Context, dir string) (plugin string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
		}
		return nil
	}
	cc := append(append([]string{}, PluginCFlags...), "-o", filepath.Join(dir, "sluice"), "plugin/shim/sluice.c")
	if err := run(PluginCC(), cc...); err != nil {
		return "", err
	}
	for out, pkg := range map[string]string{"sluice-full": "./plugin", "sluice-helperd": "./helperd"} {
		if err := run("go", "build", "-o", filepath.Join(dir, out), pkg); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "sluice"), nil
}
