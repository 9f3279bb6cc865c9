package conflist

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// writeFiles fills a temp dir; each value is the content of that file.
func writeFiles(t *testing.T, files map[string][]byte, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noTempFiles fails if a temp file of ours is left in dir.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func sluiceCount(t *testing.T, data []byte) int {
	t.Helper()
	doc, err := parseList(data)
	if err != nil {
		t.Fatalf("does not parse: %v\n%s", err, data)
	}
	return len(doc.sluiceIndexes())
}

func TestInstallPublishedConflists(t *testing.T) {
	for _, name := range []string{"10-flannel.conflist", "10-calico.conflist"} {
		t.Run(name, func(t *testing.T) {
			orig := readTestdata(t, name)
			dir := writeFiles(t, map[string][]byte{name: orig}, 0o640)
			path := filepath.Join(dir, name)
			ch, _, err := Install(dir, testEntry, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			if !ch.Changed || ch.Path != path {
				t.Errorf("change = %+v", ch)
			}
			got := readFileT(t, path)
			if ver, types := pluginTypes(t, got); ver != "0.3.1" || types[len(types)-1] != PluginType {
				t.Errorf("version %s plugins %v", ver, types)
			}
			st, err := os.Stat(path)
			if err != nil || st.Mode().Perm() != 0o640 {
				t.Errorf("mode = %v (err %v), want 0640", st.Mode().Perm(), err)
			}
			noTempFiles(t, dir)

			ch, _, err = Install(dir, testEntry, quietLog())
			if err != nil || ch.Changed {
				t.Errorf("second install changed something: %+v %v", ch, err)
			}
			if again := readFileT(t, path); !bytes.Equal(again, got) || sluiceCount(t, again) != 1 {
				t.Errorf("second install rewrote the file:\n%s", again)
			}

			changes, err := Uninstall(dir, quietLog())
			if err != nil || len(changes) != 1 {
				t.Fatalf("uninstall: %v %v", changes, err)
			}
			if back := readFileT(t, path); !bytes.Equal(back, orig) {
				t.Errorf("uninstall did not restore the file:\n%s", back)
			}
			noTempFiles(t, dir)
		})
	}
}

func TestInstallConvertsConf(t *testing.T) {
	conf := readTestdata(t, "10-bridge.conf")
	dir := writeFiles(t, map[string][]byte{"10-bridge.conf": conf, "20-other.conflist": readTestdata(t, "10-flannel.conflist")}, 0o600)
	ch, _, err := Install(dir, testEntry, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "10-bridge.conflist")
	if ch.Path != list || ch.Removed != filepath.Join(dir, "10-bridge.conf") {
		t.Errorf("change = %+v", ch)
	}
	if _, err := os.Stat(ch.Removed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".conf still there: %v", err)
	}
	got := readFileT(t, list)
	if ver, types := pluginTypes(t, got); ver != "0.4.0" || strings.Join(types, ",") != "bridge,sluice" {
		t.Errorf("version %q plugins %v", ver, types)
	}
	if st, _ := os.Stat(list); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 from the .conf", st.Mode().Perm())
	}
	pick, err := FindPrimary(dir, quietLog())
	if err != nil || pick.Path != list {
		t.Errorf("runtime would pick %q (%v), want the new conflist", pick.Path, err)
	}
	// The primary CNI writes its .conf again: it is converted again.
	if err := os.WriteFile(filepath.Join(dir, "10-bridge.conf"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Install(dir, testEntry, quietLog()); err != nil {
		t.Fatal(err)
	}
	if again := readFileT(t, list); !bytes.Equal(again, got) {
		t.Errorf("reconversion differs:\n%s", again)
	}
	// Uninstall leaves the conflist, with the original plugin only.
	if _, err := Uninstall(dir, quietLog()); err != nil {
		t.Fatal(err)
	}
	back := readFileT(t, list)
	want, err := ConfToList(conf)
	if err != nil || !bytes.Equal(back, want) {
		t.Errorf("after uninstall (err %v):\n%s\nwant\n%s", err, back, want)
	}
	noTempFiles(t, dir)
}

func TestInstallPatchesOnlyFirstFile(t *testing.T) {
	flannel, calico := readTestdata(t, "10-flannel.conflist"), readTestdata(t, "10-calico.conflist")
	other := []byte(`{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`)
	dir := writeFiles(t, map[string][]byte{
		"20-calico.conflist":  calico,
		"10-flannel.conflist": flannel,
		"99-loopback.conf":    other,
		"05-notes.txt":        []byte("not a config"),
		"07-broken.json":      []byte(`{"name":`),
	}, 0o644)
	var logs bytes.Buffer
	ch, pick, err := Install(dir, testEntry, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "10-flannel.conflist"); ch.Path != want {
		t.Errorf("patched %s, want %s", ch.Path, want)
	}
	if len(pick.Skipped) != 1 || !strings.Contains(logs.String(), "07-broken.json") {
		t.Errorf("broken file not skipped with a log line: %v\n%s", pick.Skipped, logs.String())
	}
	for name, want := range map[string][]byte{"20-calico.conflist": calico, "99-loopback.conf": other, "07-broken.json": []byte(`{"name":`)} {
		if got := readFileT(t, filepath.Join(dir, name)); !bytes.Equal(got, want) {
			t.Errorf("%s was modified:\n%s", name, got)
		}
	}
	// A new file sorting first becomes the primary; the stale entry goes.
	if err := os.WriteFile(filepath.Join(dir, "01-new.conflist"), calico, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Install(dir, testEntry, quietLog()); err != nil {
		t.Fatal(err)
	}
	if n := sluiceCount(t, readFileT(t, filepath.Join(dir, "01-new.conflist"))); n != 1 {
		t.Errorf("new primary has %d sluice entries", n)
	}
	if got := readFileT(t, filepath.Join(dir, "10-flannel.conflist")); !bytes.Equal(got, flannel) {
		t.Errorf("stale entry not removed from the old primary:\n%s", got)
	}
}

func TestInstallMalformedNamesFileAndLeavesIt(t *testing.T) {
	bad := []byte(`{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}`)
	dir := writeFiles(t, map[string][]byte{"10-flannel.conflist": bad}, 0o644)
	_, _, err := Install(dir, testEntry, quietLog())
	if !errors.Is(err, ErrNoPrimary) || !strings.Contains(err.Error(), "10-flannel.conflist") {
		t.Errorf("error %v does not name the file", err)
	}
	if got := readFileT(t, filepath.Join(dir, "10-flannel.conflist")); !bytes.Equal(got, bad) {
		t.Errorf("malformed file was modified")
	}
	// A list libcni loads but the patcher cannot chain onto (plugins only in
	// a per-network directory) is an error naming the file.
	dir = writeFiles(t, map[string][]byte{"10-x.conflist": []byte(`{"cniVersion":"1.0.0","name":"x"}`)}, 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x", "a.conf"), []byte(`{"type":"ptp"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Install(dir, testEntry, quietLog()); err == nil || !strings.Contains(err.Error(), "10-x.conflist") {
		t.Errorf("error %v does not name the file", err)
	}
	noTempFiles(t, dir)
}

func TestInstallEmptyDir(t *testing.T) {
	if _, _, err := Install(t.TempDir(), testEntry, quietLog()); !errors.Is(err, ErrNoPrimary) {
		t.Errorf("err = %v, want ErrNoPrimary", err)
	}
}

func TestCopyBinary(t *testing.T) {
	src := filepath.Join(t.TempDir(), "sluice-build")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	for range 2 {
		dst, err := CopyBinary(src, bin)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(dst)
		if err != nil || st.Mode().Perm() != 0o755 || filepath.Base(dst) != PluginType {
			t.Errorf("%s: mode %v err %v", dst, st.Mode().Perm(), err)
		}
	}
	noTempFiles(t, bin)
	if err := RemoveBinary(bin); err != nil {
		t.Fatal(err)
	}
	if err := RemoveBinary(bin); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := CopyBinary(filepath.Join(bin, "missing"), bin); err == nil {
		t.Error("missing source accepted")
	}
}

// TestCopyBinaryBringsSluiceFull: the C front's fallback next to it is
// installed with it and removed with it.
func TestCopyBinaryBringsSluiceFull(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sluice")
	for name, body := range map[string]string{"sluice": "front", FullPluginName: "full"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "bin")
	if _, err := CopyBinary(src, bin); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{PluginType: "front", FullPluginName: "full"} {
		if got, err := os.ReadFile(filepath.Join(bin, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if err := RemoveBinary(bin); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(bin); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}

func TestConvertRefusesUnsafeTargets(t *testing.T) {
	conf := readTestdata(t, "10-bridge.conf")
	foreign := readTestdata(t, "10-flannel.conflist")
	dir := writeFiles(t, map[string][]byte{"10-bridge.conf": conf, "10-bridge.conflist": foreign}, 0o644)
	if _, _, err := Install(dir, testEntry, quietLog()); err == nil || !strings.Contains(err.Error(), "10-bridge.conflist exists and is not ours") {
		t.Errorf("err = %v", err)
	}
	if got := readFileT(t, filepath.Join(dir, "10-bridge.conflist")); !bytes.Equal(got, foreign) {
		t.Error("another network's conflist was overwritten")
	}

	dir = writeFiles(t, map[string][]byte{"10-bridge.conf": conf, "10-bridge.conf.json": foreign}, 0o644)
	if _, _, err := Install(dir, testEntry, quietLog()); err == nil || !strings.Contains(err.Error(), "would become the primary") {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "10-bridge.conf")); err != nil {
		t.Errorf(".conf removed although not converted: %v", err)
	}
	noTempFiles(t, dir)
}

func TestWriteAbortsOnConcurrentChange(t *testing.T) {
	dir := writeFiles(t, map[string][]byte{"10-a.conflist": []byte("old")}, 0o644)
	path := filepath.Join(dir, "10-a.conflist")
	// The primary CNI rewrites the file after our read, before our rename.
	check := func() error {
		if err := os.WriteFile(path, []byte("theirs"), 0o644); err != nil {
			return err
		}
		return sameContent(path, []byte("old"))()
	}
	if err := writeAtomic(path, []byte("ours"), 0o644, check); !errors.Is(err, ErrConcurrentChange) {
		t.Fatalf("err = %v, want ErrConcurrentChange", err)
	}
	if got := readFileT(t, path); string(got) != "theirs" {
		t.Errorf("concurrent rewrite lost: %q", got)
	}
	noTempFiles(t, dir)
}
