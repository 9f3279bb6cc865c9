// Package images builds the OCI images the real-Node test cluster runs,
// offline: no registry is reachable from the test machines, so every image
// is assembled from files on this machine with go-containerregistry and
// written as an archive that each Node's containerd imports (ctr images
// import), the way an air-gapped cluster is loaded.
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
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sluicenet/sluice/integration/binaries"
)

// PauseRef is the sandbox image every test Node's containerd pins. The
// registry name is never contacted: the image is imported, and the kubelet
// is told not to pull (IfNotPresent with a fixed tag).
const PauseRef = "sluice.test/pause:1"

// File is one regular file of an image layer.
type File struct {
	Path string // absolute path inside the image
	Mode int64
	Data []byte
}

// Spec describes one image: its reference, its files (one layer) and the
// process it starts.
type Spec struct {
	Ref        string
	Files      []File
	Entrypoint []string
}

// epoch is the mtime of every layer entry, so that the same files always
// give the same layer digest.
var epoch = time.Unix(0, 0).UTC()

// layer is an uncompressed tar of files, with the parent directories each
// path needs, in a stable order.
func layer(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		if !filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("image file %q: path must be absolute", f.Path)
		}
		rel := f.Path[1:]
		var parents []string
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Image assembles s as a linux/amd64 image.
func Image(s Spec) (v1.Image, error) {
	data, err := layer(s.Files)
	if err != nil {
		return nil, err
	}
	return imageOf(s.Ref, data, s.Entrypoint, nil)
}

// imageOf is the linux/amd64 image of one uncompressed layer.
func imageOf(ref string, data []byte, entrypoint, cmd []string) (v1.Image, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", ref, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint, cfg.Config.Cmd = entrypoint, cmd
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cfg)
}

// WriteArchive writes the images, keyed by reference, as one OCI archive
// at path (an OCI image layout in a tar), atomically. Each manifest is
// annotated with its full reference, under the OCI key and containerd's,
// so that `ctr images import` names the image without --base-name.
func WriteArchive(path string, imgs map[string]v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".oci-layout-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	refs := make([]string, 0, len(imgs))
	for ref := range imgs {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		if _, err := name.NewTag(ref, name.StrictValidation); err != nil {
			return fmt.Errorf("image reference %q: %w", ref, err)
		}
		err := p.AppendImage(imgs[ref], layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref,
			"io.containerd.image.name":          ref,
		}))
		if err != nil {
			return fmt.Errorf("write %s into %s: %w", ref, path, err)
		}
	}
	tmp := path + ".tmp"
	defer func() { _ = os.Remove(tmp) }()
	if err := tarDir(dir, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// tarDir writes the tree under dir as a tar file at out.
func tarDir(dir, out string) error {
	data, err := dirLayer(dir)
	if err != nil {
		return err
	}
	return os.WriteFile(out, data, 0o644)
}

// staticGo builds a Go main package of this module as a static binary
// (no cgo, so no libc in the image) and returns its bytes.
func staticGo(ctx context.Context, pkg string) ([]byte, error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sluice-image-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	out := filepath.Join(dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w: %s", pkg, err, b)
	}
	return os.ReadFile(out)
}

// Pause is the sandbox image: sluice-pause as /pause.
func Pause(ctx context.Context) (v1.Image, error) {
	bin, err := staticGo(ctx, "./integration/cmd/sluice-pause")
	if err != nil {
		return nil, err
	}
	return Image(Spec{
		Ref:        PauseRef,
		Files:      []File{{Path: "/pause", Mode: 0o755, Data: bin}},
		Entrypoint: []string{"/pause"},
	})
}
