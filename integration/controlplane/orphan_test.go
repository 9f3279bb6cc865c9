package controlplane

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// orphanHelperEnv makes the test binary, run again as a child, start a
// control plane and die without any cleanup.
const orphanHelperEnv = "SLUICE_CONTROLPLANE_ORPHAN_HELPER"

// TestOrphanHelper is not a test on its own: TestNothingOutlivesATestProcess
// runs it in a child process.
func TestOrphanHelper(t *testing.T) {
	dir := os.Getenv(orphanHelperEnv)
	if dir == "" {
		t.Skip("helper for TestNothingOutlivesATestProcess")
	}
	cp, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("pids", cp.etcd.cmd.Process.Pid, cp.apiserver.cmd.Process.Pid)
	os.Exit(3) // no Stop, no cleanup: as if the test binary crashed
}

// A test process that dies without stopping its control plane must not
// leave etcd or kube-apiserver running (Pdeathsig).
func TestNothingOutlivesATestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOrphanHelper$")
	cmd.Env = append(os.Environ(), orphanHelperEnv+"="+t.TempDir())
	out, _ := cmd.Output()
	var pids []int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "pids" {
			for _, s := range f[1:] {
				p, err := strconv.Atoi(s)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, p)
			}
		}
	}
	if len(pids) != 2 {
		t.Fatalf("helper did not start a control plane:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !(gone(pids[0]) && gone(pids[1])) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range pids {
		if !gone(p) {
			_ = syscall.Kill(p, syscall.SIGKILL) // started by our helper
			t.Errorf("pid %d outlived its test process", p)
		}
	}
}
