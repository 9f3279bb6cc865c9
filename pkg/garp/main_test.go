//go:build linux

package garp

import (
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }
