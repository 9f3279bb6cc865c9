package cnitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// frontOnly returns bins whose sluice directory holds the C front alone,
// without sluice-full: a call the helper does not run itself fails, so a
// call that succeeds went through the helper.
func frontOnly(t *testing.T) Bins {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(bins.Sluice, "sluice"))
	if err != nil {
		t.Fatal(err)
	}
	b := bins
	b.Sluice = t.TempDir()
	if err := os.WriteFile(filepath.Join(b.Sluice, "sluice"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFrontRunsCallsInHelper: with a live helper, ADD, CHECK and DEL of
// the whole chain need nothing but the front; with the helper gone the
// front says it has nothing to hand the call to.
func TestFrontRunsCallsInHelper(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, frontOnly(t), "front")
	h := e.StartHelper(t)
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge})
	p := e.NewPod(t, "fp")
	if _, err := e.Add(ctx, l, p); err != nil {
		t.Fatalf("ADD through the front: %v", err)
	}
	if got := keys(listHelper(t, e)); len(got) != 1 || got[0] != p.RT.ContainerID {
		t.Fatalf("helper knows %v", got)
	}
	if err := e.Check(ctx, l, p); err != nil {
		t.Fatalf("CHECK through the front: %v", err)
	}
	if err := e.Del(ctx, l, p); err != nil {
		t.Fatalf("DEL through the front: %v", err)
	}
	if got := listHelper(t, e); len(got) != 0 {
		t.Fatalf("helper still knows %v", keys(got))
	}
	h.Stop()
	_, err := e.Add(ctx, l, e.NewPod(t, "fq"))
	if err == nil || !strings.Contains(err.Error(), "sluice-full cannot be run") {
		t.Fatalf("ADD with the helper down and no sluice-full: err = %v", err)
	}
}

// TestFrontLeavesAnotherHelpersCall: the front dials the first "socket"
// key it finds, here a nested one naming the live helper, while the
// configuration's own socket is another. The helper does not run the
// call but hands it back, and with no sluice-full beside the front the
// call fails: it never ran in the wrong helper.
func TestFrontLeavesAnotherHelpersCall(t *testing.T) {
	nstest.RequireRoot(t)
	e := NewEnv(t, frontOnly(t), "nested")
	e.StartHelper(t)
	p := e.NewPod(t, "np")
	sock, _ := json.Marshal(e.Socket)
	other, _ := json.Marshal(filepath.Join(t.TempDir(), "other.sock"))
	c := e.Node.Cmd(filepath.Join(e.Bins.Sluice, "sluice"))
	c.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + p.RT.ContainerID, "CNI_NETNS=" + p.NS.Path,
		"CNI_IFNAME=eth0", "CNI_PATH=" + bins.Reference}
	c.Stdin = strings.NewReader(`{"cniVersion":"1.0.0","name":"sltest","type":"sluice","x-nested":{"socket":` + string(sock) +
		`},"socket":` + string(other) + `,"spoolDir":"` + e.Spool + `"}`)
	out, err := c.Output()
	if err == nil || !strings.Contains(string(out), "sluice-full cannot be run") {
		t.Fatalf("front with another helper's socket: err %v, output %s; want the hand-back to sluice-full", err, out)
	}
	if got := listHelper(t, e); len(got) != 0 {
		t.Fatalf("the helper recorded %v for a call that was not its own", keys(got))
	}
}

// TestFrontHelperWithoutSysAdmin: the helper container has NET_ADMIN and
// NET_RAW, not SYS_ADMIN, so it may not setns into a Pod's netns. ADD,
// CHECK and DEL must still run in the helper (sluice-full is absent).
func TestFrontHelperWithoutSysAdmin(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, frontOnly(t), "nosys")
	e.HelperWrap = []string{"setpriv", "--bounding-set=-sys_admin"}
	e.StartHelper(t)
	for _, primary := range []Primary{Bridge, PTP} {
		l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: primary})
		p := e.NewPod(t, "ns"+string(primary))
		if _, err := e.Add(ctx, l, p); err != nil {
			t.Fatalf("%s ADD with a helper without SYS_ADMIN: %v", primary, err)
		}
		if err := e.Check(ctx, l, p); err != nil {
			t.Fatalf("%s CHECK: %v", primary, err)
		}
		if err := e.Del(ctx, l, p); err != nil {
			t.Fatalf("%s DEL: %v", primary, err)
		}
	}
}

// TestFrontMatchesFullPlugin runs the same invocations through the C front
// (the helper runs them, or the front falls back) and through sluice-full
// directly, and wants byte-identical output and the same exit code.
func TestFrontMatchesFullPlugin(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "same")
	e.StartHelper(t)
	p := e.NewPod(t, "sp")
	prev, err := e.Add(ctx, e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge, NoSluice: true}), p)
	if err != nil {
		t.Fatal(err)
	}
	prevJSON, err := json.Marshal(prev)
	if err != nil {
		t.Fatal(err)
	}
	conf := func(ver, socketJSON string, withPrev bool, pad ...int) []byte {
		s := `{"cniVersion":"` + ver + `","name":"sltest","type":"sluice","socket":` + socketJSON +
			`,"spoolDir":"` + e.Spool + `","timeout":"2s"`
		if len(pad) > 0 {
			// Larger than an exec frame (64 KiB), even many times over:
			// the front must hand all of it on.
			s += `,"x-pad":"` + strings.Repeat("p", pad[0]) + `"`
		}
		if withPrev {
			s += `,"prevResult":` + string(prevJSON)
		}
		return []byte(s + "}")
	}
	sock, _ := json.Marshal(e.Socket)
	escaped := strings.ReplaceAll(string(sock), "/", `\/`) // same path; the front leaves escapes to Go
	// The front dials the first "socket" key it finds, here a nested one
	// naming this helper; the helper sees that the configuration's own
	// socket is another, and hands the call back to sluice-full.
	other, _ := json.Marshal(filepath.Join(t.TempDir(), "other.sock"))
	nested := []byte(`{"cniVersion":"1.0.0","name":"sltest","type":"sluice","x-nested":{"socket":` + string(sock) +
		`},"socket":` + string(other) + `,"spoolDir":"` + e.Spool + `","timeout":"2s","prevResult":` + string(prevJSON) + `}`)
	env := map[string]string{
		"CNI_CONTAINERID": p.RT.ContainerID, "CNI_NETNS": p.NS.Path, "CNI_IFNAME": "eth0",
		"CNI_PATH": bins.Reference, "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=sp;K8S_POD_UID=u1",
	}
	cases := []struct {
		name, cmd string
		stdin     []byte
		unset     string
	}{
		{"add", "ADD", conf("1.0.0", string(sock), true), ""},
		{"add again", "ADD", conf("1.0.0", string(sock), true), ""},
		{"check", "CHECK", conf("1.0.0", string(sock), true), ""},
		{"add 0.4.0", "ADD", conf("0.4.0", string(sock), true), ""},
		{"escaped socket", "ADD", conf("1.0.0", escaped, true), ""},
		{"nested socket first", "ADD", nested, ""},
		{"100 KiB config", "ADD", conf("1.0.0", string(sock), true, 100<<10), ""},
		{"17 MiB config", "ADD", conf("1.0.0", string(sock), true, 17<<20), ""},
		{"no prevResult", "ADD", conf("1.0.0", string(sock), false), ""},
		{"unsupported version", "ADD", conf("9.9.9", string(sock), true), ""},
		{"no CNI_PATH", "ADD", conf("1.0.0", string(sock), true), "CNI_PATH"},
		{"bad json", "ADD", []byte(`{"name":`), ""},
		{"del", "DEL", conf("1.0.0", string(sock), true), ""},
		{"del again", "DEL", conf("1.0.0", string(sock), true), ""},
	}
	run := func(bin, cmd string, stdin []byte, unset string) ([]byte, int) {
		c := e.Node.Cmd(filepath.Join(bins.Sluice, bin))
		c.Env = []string{"CNI_COMMAND=" + cmd}
		for k, v := range env {
			if k != unset {
				c.Env = append(c.Env, k+"="+v)
			}
		}
		c.Stdin = bytes.NewReader(stdin)
		out, err := c.Output()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run %s: %v", bin, err)
		}
		return out, c.ProcessState.ExitCode()
	}
	for _, tc := range cases {
		front, fcode := run("sluice", tc.cmd, tc.stdin, tc.unset)
		full, gcode := run("sluice-full", tc.cmd, tc.stdin, tc.unset)
		if !bytes.Equal(front, full) || fcode != gcode {
			t.Errorf("%s: front exit %d:\n%s\nsluice-full exit %d:\n%s", tc.name, fcode, front, gcode, full)
		}
		if tc.name == "add" && (fcode != 0 || !bytes.Contains(front, []byte(`"cniVersion": "1.0.0"`))) {
			t.Errorf("add: exit %d, output %s", fcode, front)
		}
	}
}
