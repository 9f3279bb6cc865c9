package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunInstallUninstall(t *testing.T) {
	root := t.TempDir()
	conf, bin := filepath.Join(root, "net.d"), filepath.Join(root, "bin")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile("../../testdata/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(conf, "10-flannel.conflist")
	if err := os.WriteFile(list, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(root, "sluice-build")
	if err := os.WriteFile(plugin, []byte("binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--cni-conf-dir", conf, "--cni-bin-dir", bin, "--plugin-binary", plugin,
		"--socket", "/run/x.sock", "--timeout", "2s", "--fail-closed", "--log-file", "/tmp/l"}
	if err := run(args); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(list)
	for _, want := range []string{`"type": "sluice"`, `"socket": "/run/x.sock"`, `"timeout": "2s"`, `"failClosed": true`, `"logFile": "/tmp/l"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	if st, err := os.Stat(filepath.Join(bin, "sluice")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("binary not installed 0755: %v", err)
	}
	if err := run([]string{"--cni-conf-dir", conf, "--cni-bin-dir", bin, "--uninstall", "--remove-binary"}); err != nil {
		t.Fatal(err)
	}
	if back, _ := os.ReadFile(list); string(back) != string(orig) {
		t.Errorf("uninstall did not restore:\n%s", back)
	}
	if _, err := os.Stat(filepath.Join(bin, "sluice")); !os.IsNotExist(err) {
		t.Errorf("binary still there: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cni-conf-dir", empty}, empty},
		{[]string{"--cni-conf-dir", empty, "--timeout", "soon"}, "invalid timeout"},
		{[]string{"--cni-conf-dir", empty, "extra"}, "unexpected arguments"},
		{[]string{"--cni-conf-dir", empty, "--plugin-binary", filepath.Join(empty, "nope")}, "nope"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}
