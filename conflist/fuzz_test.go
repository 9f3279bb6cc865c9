package conflist

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// FuzzAppend checks the patcher on any input: an error, or a conflist that
// loads, has exactly one sluice entry, last, keeps the cniVersion, and from
// which RemoveEntry gives back the input (byte for byte when the input had
// no sluice entry). With single set, the input is a .conf converted first.
func FuzzAppend(f *testing.F) {
	for _, name := range []string{"10-flannel.conflist", "10-calico.conflist"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false, "1s", true)
	}
	conf, err := os.ReadFile(filepath.Join("testdata", "10-bridge.conf"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(conf, true, "", false)
	f.Add([]byte(`{"name":"n","plugins":[{"type":"sluice"},{"type":"ptp"}]}`), false, "", false)
	f.Fuzz(func(t *testing.T, data []byte, single bool, timeout string, failClosed bool) {
		e := Entry{Timeout: timeout, FailClosed: failClosed, Socket: "/s"}
		list := data
		if single {
			var err error
			if list, err = ConfToList(data); err != nil {
				return
			}
			c, _ := libcni.ConfFromBytes(data)
			checkVersion(t, list, c.Network.CNIVersion)
		}
		out, err := AppendEntry(list, e)
		if err != nil {
			return
		}
		in, err := libcni.ConfListFromBytes(list)
		if err != nil {
			t.Fatalf("AppendEntry accepted a list libcni refuses: %v", err)
		}
		checkVersion(t, out, in.CNIVersion)
		doc, err := parseList(out)
		if err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, out)
		}
		for i, s := range doc.plugins {
			if !bytes.Equal(bytes.TrimSpace(out[s.start:s.end]), out[s.start:s.end]) || len(out[s.start:s.end]) == 0 {
				t.Fatalf("plugin %d span %v is not a value", i, s)
			}
		}
		if idx := doc.sluiceIndexes(); len(idx) != 1 || idx[0] != len(doc.plugins)-1 {
			t.Fatalf("sluice entries at %v of %d:\n%s", idx, len(doc.plugins), out)
		}
		again, err := AppendEntry(out, e)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent (err %v)", err)
		}
		back, err := RemoveEntry(out)
		if err != nil {
			t.Fatalf("remove: %v", err)
		}
		want, err := RemoveEntry(list)
		if err != nil {
			t.Fatalf("remove from input: %v", err)
		}
		had, _ := HasEntry(list)
		if !had && !bytes.Equal(back, list) {
			t.Fatalf("RemoveEntry(AppendEntry(x)) != x:\n%s\n---\n%s", back, list)
		}
		if !jsonEqual(back, want) {
			t.Fatalf("RemoveEntry(AppendEntry(x)) != RemoveEntry(x):\n%s\n---\n%s", back, want)
		}
	})
}

func checkVersion(t *testing.T, data []byte, want string) {
	t.Helper()
	l, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("does not load: %v\n%s", err, data)
	}
	if l.CNIVersion != want {
		t.Fatalf("cniVersion %q, want %q", l.CNIVersion, want)
	}
}
