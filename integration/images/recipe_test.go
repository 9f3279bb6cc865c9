package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/integration/binaries"
)

// The Dockerfile and `make image` build one image: both must take the
// package list and the binaries' build flags from install/image, and the
// Dockerfile must not carry a second copy of either.
func TestDockerfileUsesTheRecipe(t *testing.T) {
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{"install/image/build-binaries.sh", "install/image/packages"} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile does not use %s", want)
		}
	}
	pkgs, err := readList(root, "packages")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.Contains(line, "go build") || strings.Contains(line, "musl-gcc ") {
			t.Errorf("the Dockerfile builds a binary itself: %q", line)
		}
		for _, p := range pkgs {
			if strings.Contains(line, "install") && strings.Contains(line, " "+p) {
				t.Errorf("the Dockerfile names package %s itself: %q", p, line)
			}
		}
	}
}
