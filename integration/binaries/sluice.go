package binaries

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PluginCFlagsFile holds how the plugin's C front is built, for the
// Makefile, the Dockerfile and BuildSluice alike: static, so it runs on any
// Node whatever its libc, with code and read-only data in one segment
// (fewer pages to fault in at each exec).
const PluginCFlagsFile = "plugin/shim/cflags"

// PluginCFlags reads PluginCFlagsFile in the tree at root.
func PluginCFlags(root string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, PluginCFlagsFile))
	if err != nil {
		return nil, fmt.Errorf("the C front's compiler flags: %w", err)
	}
	flags := strings.Fields(string(b))
	if len(flags) == 0 {
		return nil, fmt.Errorf("the C front's compiler flags: %s is empty", PluginCFlagsFile)
	}
	return flags, nil
}

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
	flags, err := PluginCFlags(root)
	if err != nil {
		return "", err
	}
	cc := append(flags, "-o", filepath.Join(dir, "sluice"), "plugin/shim/sluice.c")
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
