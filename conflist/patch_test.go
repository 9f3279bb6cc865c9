package conflist

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

var testEntry = Entry{Socket: "/run/sluice/cni.sock", Timeout: "2s", FailClosed: true, LogFile: "/var/log/sluice.log"}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pluginTypes loads data as containerd does and lists the plugin types.
func pluginTypes(t *testing.T, data []byte) (string, []string) {
	t.Helper()
	l, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("result does not load: %v\n%s", err, data)
	}
	var types []string
	for _, p := range l.Plugins {
		types = append(types, p.Network.Type)
	}
	return l.CNIVersion, types
}

// lastPlugin decodes the last plugin of a conflist.
func lastPlugin(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var l struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	return l.Plugins[len(l.Plugins)-1]
}

func TestAppendEntryPublishedConflists(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"10-flannel.conflist", []string{"flannel", "portmap", "sluice"}},
		{"10-calico.conflist", []string{"calico", "portmap", "bandwidth", "sluice"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			in := readTestdata(t, tc.file)
			out, err := AppendEntry(in, testEntry)
			if err != nil {
				t.Fatal(err)
			}
			ver, types := pluginTypes(t, out)
			if ver != "0.3.1" {
				t.Errorf("cniVersion = %q, want 0.3.1", ver)
			}
			if strings.Join(types, ",") != strings.Join(tc.want, ",") {
				t.Errorf("plugins = %v, want %v", types, tc.want)
			}
			got := lastPlugin(t, out)
			want := map[string]any{"type": "sluice", "socket": "/run/sluice/cni.sock", "timeout": "2s", "failClosed": true, "logFile": "/var/log/sluice.log"}
			if !jsonEqual(mustJSON(t, got), mustJSON(t, want)) {
				t.Errorf("sluice entry = %v, want %v", got, want)
			}
			// Everything before the inserted entry is the original text.
			if !strings.HasPrefix(string(out), strings.TrimRight(string(in), "\n\t ]}")) {
				t.Errorf("original text not kept as prefix:\n%s", out)
			}
			again, err := AppendEntry(out, testEntry)
			if err != nil || string(again) != string(out) {
				t.Errorf("second append changed the file (err %v):\n%s", err, again)
			}
			back, err := RemoveEntry(out)
			if err != nil || string(back) != string(in) {
				t.Errorf("remove did not restore the bytes (err %v):\n%s", err, back)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendEntryCases(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		entry     Entry
		wantTypes string // comma-joined; empty means an error is expected
		wantOut   string // exact output when set
	}{
		{
			name:      "compact list",
			in:        `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`,
			wantTypes: "ptp,sluice",
			wantOut:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"sluice"}]}`,
		},
		{
			name:      "unknown fields and number spelling kept",
			in:        `{"cniVersion":"0.4.0","name":"n","x":{"a":1.50},"plugins":[{"type":"ptp","y":1e3}]}`,
			wantTypes: "ptp,sluice",
			wantOut:   `{"cniVersion":"0.4.0","name":"n","x":{"a":1.50},"plugins":[{"type":"ptp","y":1e3},{"type":"sluice"}]}`,
		},
		{
			name:      "existing entry with other options updated in place",
			in:        `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}, {"type":"sluice","timeout":"5s"}]}`,
			entry:     Entry{Timeout: "1s"},
			wantTypes: "ptp,sluice",
			wantOut:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}, {"type":"sluice","timeout":"1s"}]}`,
		},
		{
			name:      "misplaced and duplicate entries become one, last",
			in:        `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"sluice"},{"type":"ptp"},{"type":"sluice"},{"type":"portmap"}]}`,
			wantTypes: "ptp,portmap,sluice",
		},
		{
			name:      "repeated plugins key: the last one counts, as in libcni",
			in:        `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}],"plugins":[{"type":"b"}]}`,
			wantTypes: "b,sluice",
		},
		{name: "only sluice", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"sluice"}]}`},
		{name: "malformed", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}`},
		{name: "no name", in: `{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`},
		{name: "no plugins key", in: `{"cniVersion":"1.0.0","name":"n"}`},
		{name: "empty plugins", in: `{"cniVersion":"1.0.0","name":"n","plugins":[]}`},
		{name: "plugin without type", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"x":1}]}`},
		{name: "trailing data", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]} {}`},
		{name: "bad timeout", in: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`, entry: Entry{Timeout: "soon"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AppendEntry([]byte(tc.in), tc.entry)
			if tc.wantTypes == "" {
				if err == nil {
					t.Fatalf("want error, got\n%s", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, types := pluginTypes(t, out); strings.Join(types, ",") != tc.wantTypes {
				t.Errorf("plugins = %v, want %s", types, tc.wantTypes)
			}
			if tc.wantOut != "" && string(out) != tc.wantOut {
				t.Errorf("got\n%s\nwant\n%s", out, tc.wantOut)
			}
		})
	}
}

func TestAppendEntryIndentation(t *testing.T) {
	in := "{\n    \"cniVersion\": \"1.0.0\",\n    \"name\": \"n\",\n    \"plugins\": [\n        {\n            \"type\": \"ptp\"\n        }\n    ]\n}\n"
	out, err := AppendEntry([]byte(in), Entry{Timeout: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n    \"cniVersion\": \"1.0.0\",\n    \"name\": \"n\",\n    \"plugins\": [\n        {\n            \"type\": \"ptp\"\n        },\n        {\n            \"type\": \"sluice\",\n            \"timeout\": \"1s\"\n        }\n    ]\n}\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func TestRemoveEntry(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"none", `{"name":"n","plugins":[{"type":"ptp"}]}`, `{"name":"n","plugins":[{"type":"ptp"}]}`},
		{"last", `{"name":"n","plugins":[{"type":"ptp"}, {"type":"sluice"}]}`, `{"name":"n","plugins":[{"type":"ptp"}]}`},
		{"first", `{"name":"n","plugins":[ {"type":"sluice"}, {"type":"ptp"} ]}`, `{"name":"n","plugins":[ {"type":"ptp"} ]}`},
		{"several", `{"name":"n","plugins":[{"type":"sluice"},{"type":"sluice"},{"type":"ptp"},{"type":"sluice"}]}`, `{"name":"n","plugins":[{"type":"ptp"}]}`},
		{"only sluice", `{"name":"n","plugins":[{"type":"sluice"}]}`, ""},
		{"malformed", `{"name":"n","plugins":[{"type":"sluice"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := RemoveEntry([]byte(tc.in))
			if tc.want == "" {
				if err == nil {
					t.Fatalf("want error, got %s", out)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Errorf("got %s (err %v), want %s", out, err, tc.want)
			}
		})
	}
}

func TestConfToListKeepsVersionAndContent(t *testing.T) {
	in := readTestdata(t, "10-bridge.conf")
	out, err := ConfToList(in)
	if err != nil {
		t.Fatal(err)
	}
	ver, types := pluginTypes(t, out)
	if ver != "0.4.0" || strings.Join(types, ",") != "bridge" {
		t.Errorf("got version %q plugins %v", ver, types)
	}
	var l struct {
		Name    string            `json:"name"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatal(err)
	}
	if l.Name != "mynet" || !jsonEqual(l.Plugins[0], in) {
		t.Errorf("plugin not kept:\n%s", out)
	}
	if !strings.Contains(string(out), "2.50") {
		t.Errorf("number spelling not kept:\n%s", out)
	}
	if _, err := ConfToList([]byte(`{"name":"n","type":"sluice"}`)); err == nil {
		t.Error("a sluice-only .conf was accepted")
	}
}

func TestExamplesLoadWithSluiceLast(t *testing.T) {
	files, err := filepath.Glob("examples/*.conflist")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, types := pluginTypes(t, data)
		if types[len(types)-1] != PluginType {
			t.Errorf("%s: sluice not last: %v", f, types)
		}
		out, err := AppendEntry(data, Entry{Socket: "/var/run/sluice/cni.sock", Timeout: "1s"})
		if err != nil || string(out) != string(data) {
			t.Errorf("%s: not already as the installer writes it (err %v):\n%s", f, err, out)
		}
	}
}
