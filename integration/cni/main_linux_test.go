package cnitest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

var bins Bins

func TestMain(m *testing.M) {
	nstest.Sweep()
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips
	}
	dir, err := os.MkdirTemp("", "sluice-cnitest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	bins, err = BuildBins(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
