// Command sluice-image builds the Sluice image without Docker or a
// registry and writes it as an OCI archive: `make image`. The recipe is in
// install/image (the Dockerfile reads the same files); integration/images
// assembles it.
//
//	sluice-image -o bin/sluice-image.tar -ref ghcr.io/sluicenet/sluice:dev
//
// Load the archive with `ctr -n k8s.io images import`, `docker load`, or
// `podman load`, or push it with any OCI tool (crane, skopeo, oras).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sluicenet/sluice/integration/images"
)

func main() {
	out := flag.String("o", "bin/sluice-image.tar", "the OCI archive to write")
	ref := flag.String("ref", images.SluiceRef, "the image's name")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	img, err := images.Sluice(ctx, *ref)
	if err == nil {
		err = images.WriteArchive(*out, map[string]v1.Image{*ref: img})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-image: %v\n", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s (%s)\n", *out, *ref, d)
}
