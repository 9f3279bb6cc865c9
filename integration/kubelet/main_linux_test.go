// Package kubelet holds the tests of the real-Node cluster: containerd,
// runc and a kubelet in every Node's namespaces (cluster.Options.Kubelet).
package kubelet

import (
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }
