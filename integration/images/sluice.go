package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sluicenet/sluice/integration/binaries"
)

// SluiceRef is the name `make image` gives the Sluice image by default.
const SluiceRef = "ghcr.io/sluicenet/sluice:dev"

// recipeDir holds what both image recipes read: the package list, the
// dependencies an unpacked image leaves out, and the binaries' build
// script (the Dockerfile uses the same three files).
const recipeDir = "install/image"

// readList reads a list file of the recipe: one name per line, # comments.
func readList(root, name string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, recipeDir, name))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}

// parseDepends turns the output of `apt-cache depends --recurse` into the
// set of real package names (virtual ones are printed in <>), without the
// excluded ones, sorted.
func parseDepends(out string, exclude []string) []string {
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[e] = true
	}
	seen := map[string]bool{}
	var pkgs []string
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == ' ' || line[0] == '<' {
			continue
		}
		name := strings.TrimSpace(line)
		if !skip[name] && !seen[name] {
			seen[name] = true
			pkgs = append(pkgs, name)
		}
	}
	sort.Strings(pkgs)
	return pkgs
}

// Packages is the closure of the recipe's packages over Depends and
// Pre-Depends, as this machine's apt resolves it, minus the excludes.
func Packages(ctx context.Context, root string) ([]string, error) {
	want, err := readList(root, "packages")
	if err != nil {
		return nil, err
	}
	exclude, err := readList(root, "runtime-excludes")
	if err != nil {
		return nil, err
	}
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, want...)
	out, err := exec.CommandContext(ctx, "apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends %s: %w (run apt-get update first)", strings.Join(want, " "), err)
	}
	return parseDepends(string(out), exclude), nil
}

// download fetches the .deb of every package into dir with apt-get
// download, skipping those already there, and returns their paths.
func download(ctx context.Context, dir string, pkgs []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths, fetch []string
	for _, p := range pkgs {
		m, _ := filepath.Glob(filepath.Join(dir, p+"_*.deb"))
		if len(m) == 1 {
			paths = append(paths, m[0])
			continue
		}
		fetch = append(fetch, p)
	}
	if len(fetch) > 0 {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, fetch...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download: %w: %s", err, out)
		}
		for _, p := range fetch {
			m, _ := filepath.Glob(filepath.Join(dir, p+"_*.deb"))
			if len(m) != 1 {
				return nil, fmt.Errorf("apt-get download left %d files for %s", len(m), p)
			}
			paths = append(paths, m[0])
		}
	}
	sort.Strings(paths)
	return paths, nil
}

// dirLayer is an uncompressed tar of the tree under dir, as root-owned
// files with a fixed mtime, in a stable order.
func dirLayer(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = epoch, epoch, epoch
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer of %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Sluice builds the Sluice image: the Debian packages of the recipe and
// what they depend on, unpacked (no maintainer script runs), and the four
// binaries under /usr/local/bin. The .debs are cached in
// .cache/image-debs.
func Sluice(ctx context.Context, ref string) (v1.Image, error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return nil, err
	}
	pkgs, err := Packages(ctx, root)
	if err != nil {
		return nil, err
	}
	debs, err := download(ctx, filepath.Join(root, ".cache", "image-debs"), pkgs)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "sluice-image-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	rootfs := filepath.Join(work, "rootfs")
	for _, d := range []string{"tmp", "run", "var/run", "usr/local/bin", "etc/cni/net.d", "opt/cni/bin"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	_ = os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777)
	for _, d := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", d, rootfs).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("unpack %s: %w: %s", filepath.Base(d), err, out)
		}
	}
	build := exec.CommandContext(ctx, "sh", filepath.Join(root, recipeDir, "build-binaries.sh"), filepath.Join(rootfs, "usr", "local", "bin"))
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the binaries: %w: %s", err, out)
	}
	data, err := dirLayer(rootfs)
	if err != nil {
		return nil, err
	}
	return imageOf(ref, data, nil, []string{"sluice-helperd", "--help"})
}
