//go:build linux

package gossip

import (
	"os"
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(runChild())
	}
	nstest.Sweep()
	os.Exit(m.Run())
}
