package images

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestLayerHasParentsOnceAndIsStable(t *testing.T) {
	files := []File{
		{Path: "/usr/bin/b", Mode: 0o755, Data: []byte("b")},
		{Path: "/usr/bin/a", Mode: 0o644, Data: []byte("a")},
		{Path: "/pause", Mode: 0o755, Data: []byte("p")},
	}
	one, err := layer(files)
	if err != nil {
		t.Fatal(err)
	}
	two, err := layer([]File{files[2], files[0], files[1]})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one, two) {
		t.Error("the same files in another order gave another layer")
	}
	var names []string
	for _, h := range headers(t, one) {
		names = append(names, h.Name)
	}
	want := []string{"pause", "usr/", "usr/bin/", "usr/bin/a", "usr/bin/b"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
	if _, err := layer([]File{{Path: "rel", Data: nil}}); err == nil {
		t.Error("a relative path was accepted")
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	img, err := Image(Spec{Ref: "sluice.test/x:1", Files: []File{{Path: "/x", Mode: 0o755, Data: []byte("hi")}}, Entrypoint: []string{"/x"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.tar")
	if err := WriteArchive(path, map[string]v1.Image{"sluice.test/x:1": img}); err != nil {
		t.Fatal(err)
	}
	back := readBack(t, path, "sluice.test/x:1")
	cfg, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/x" {
		t.Errorf("config = %s/%s %q", cfg.OS, cfg.Architecture, cfg.Config.Entrypoint)
	}
	if mt, _ := back.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI's", mt)
	}
	d1, _ := img.Digest()
	d2, _ := back.Digest()
	if d1 != d2 {
		t.Errorf("digest changed through the archive: %s → %s", d1, d2)
	}
	if err := WriteArchive(path, map[string]v1.Image{"Not A Ref!": img}); err == nil {
		t.Error("a bad reference was accepted")
	}
}

// readBack unpacks an OCI archive and returns the image annotated ref.
func readBack(t *testing.T, archive, ref string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v: %s", err, out)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == ref && d.Annotations["io.containerd.image.name"] == ref {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("no manifest annotated %s in %+v", ref, m.Manifests)
	return nil
}

func TestParseDependsKeepsRealPackagesOnce(t *testing.T) {
	out := `iptables
  Depends: libc6
  Depends: <awk>
    mawk
libc6
  Depends: libgcc-s1
<awk>
mawk
debconf
libgcc-s1
libc6
`
	got := parseDepends(out, []string{"debconf"})
	want := []string{"iptables", "libc6", "libgcc-s1", "mawk"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestDirLayerKeepsLinksAndModes(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "usr/sbin/xtables-nft-multi"), []byte("elf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("xtables-nft-multi", filepath.Join(dir, "usr/sbin/iptables-nft")); err != nil {
		t.Fatal(err)
	}
	data, err := dirLayer(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*tar.Header{}
	for _, h := range headers(t, data) {
		seen[h.Name] = h
	}
	if h := seen["usr/sbin/iptables-nft"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "xtables-nft-multi" {
		t.Errorf("symlink lost: %+v", h)
	}
	if h := seen["usr/sbin/xtables-nft-multi"]; h == nil || h.Mode&0o111 == 0 || h.Uid != 0 {
		t.Errorf("executable lost its mode or owner: %+v", h)
	}
	if h := seen["usr/"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("directory missing: %+v", h)
	}
}

// headers reads every entry header of a tar stream, in order.
func headers(t *testing.T, data []byte) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}
