//go:build linux

package garp

import (
	"os"
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) {
	nstest.Sweep()
	os.Exit(m.Run())
}
