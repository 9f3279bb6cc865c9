//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// buildSluice builds the CNI plugin and the helper from this checkout into
// a temporary directory, so the test runs the code under test rather than
// whatever bin/ last held.
func buildSluice(t *testing.T) (plugin, helper string) {
	t.Helper()
	dir := t.TempDir()
	plugin, err := binaries.BuildSluice(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return plugin, filepath.Join(dir, "sluice-helperd")
}

// TestSluiceChainAndHelpers runs the Nodes with sluice appended to their
// conflist and a helper on each, and checks the process controls: Pods
// come up through the whole chain, helpers stop, crash, freeze and thaw,
// and Close ends them.
func TestSluiceChainAndHelpers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	nstest.RequireRoot(t)
	plugin, helper := buildSluice(t)
	c := New(t, Options{Sluice: true, SluicePlugin: plugin, HelperBinary: helper})
	ctx := testCtx(t)

	n := c.Node("node-a")
	var doc struct {
		Plugins []map[string]any `json:"plugins"`
	}
	b, err := os.ReadFile(n.ConflistPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	last := doc.Plugins[len(doc.Plugins)-1]
	if len(doc.Plugins) != 2 || doc.Plugins[0]["type"] != "bridge" || last["type"] != "sluice" ||
		last["socket"] != n.Paths.CNISocket || last["spoolDir"] != n.Paths.SpoolDir {
		t.Fatalf("conflist of node-a:\n%s", b)
	}

	for _, node := range c.Nodes {
		if err := c.StartHelper(node.Name); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StartHelper("node-a"); err == nil {
		t.Error("a second helper started on node-a")
	}
	for _, node := range c.Nodes {
		if err := c.WaitHelper(ctx, node.Name, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	p, err := c.AddPod(ctx, "node-a", "default", "plain", map[string]string{"app": "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Whoami(ctx, p); err != nil || got != n.IP {
		t.Errorf("unselected pod left with %s (%v), want node IP %s", got, err, n.IP)
	}
	// With its helper up, the runtime-facing front had sluice-helperd run
	// the ADD: it is in the helper's log, and sluice-full (whose log is the
	// entry's logFile) never ran.
	if hl, err := os.ReadFile(n.Paths.HelperLog); err != nil || !strings.Contains(string(hl), "via=helper") {
		t.Errorf("helper log of node-a has no in-process ADD (%v)", err)
	}
	if pl, err := os.ReadFile(filepath.Join(n.Paths.Root, "sluice-cni.log")); err == nil && strings.Contains(string(pl), "attachment added") {
		t.Errorf("sluice-full ran the ADD although the helper was up:\n%s", pl)
	}

	// The helper learnt of the Pod (through the plugin or its informer) and
	// its CLI answers on the Node's own status socket.
	if err := poll(ctx, 10*time.Second, func() (bool, error) {
		out, err := c.HelperCLI(ctx, "node-a", "pods")
		return err == nil && strings.Contains(out, "plain"), nil
	}); err != nil {
		out, cliErr := c.HelperCLI(ctx, "node-a", "pods")
		t.Errorf("helper CLI on node-a does not list the Pod: %v\n%s %v", err, out, cliErr)
	}

	pid := c.HelperPID("node-b")
	if err := c.FreezeNode("node-b"); err != nil {
		t.Fatal(err)
	}
	if state := procState(pid); state != 'T' {
		t.Errorf("frozen helper in state %c, want T", state)
	}
	if err := c.ThawNode("node-b"); err != nil {
		t.Fatal(err)
	}
	if err := c.KillHelper("node-b"); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || c.HelperPID("node-b") != 0 {
		t.Errorf("helper pid %d survived KillHelper", pid)
	}
	if err := c.StartHelper("node-b", "--v=debug"); err != nil {
		t.Fatalf("restart after kill: %v", err)
	}
	if err := c.StopHelper("node-c"); err != nil {
		t.Fatal(err)
	}
	if c.HelperPID("node-c") != 0 {
		t.Error("node-c helper still recorded after StopHelper")
	}
}
