package fuzz

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// socketKey is a "socket" key, as front_socket looks for it.
var socketKey = regexp.MustCompile(`"socket"[ \t\r\n]*:`)

// notPlain: r may not be in a socket path the front dials (the quotes
// around one aside).
func notPlain(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' }

// names tells whether some "socket" key of conf has the string path for
// its value, comparing bytes (conf need not be UTF-8).
func names(conf []byte, path string) bool {
	for i := 0; ; i++ {
		k := bytes.Index(conf[i:], []byte(`"socket"`))
		if k < 0 {
			return false
		}
		i += k
		rest := bytes.TrimLeft(conf[i+len(`"socket"`):], " \t\r\n")
		if v, ok := bytes.CutPrefix(rest, []byte(":")); ok {
			if v, ok = bytes.CutPrefix(bytes.TrimLeft(v, " \t\r\n"), []byte(`"`+path+`"`)); ok {
				return true
			}
		}
	}
}

// front_socket picks a socket the configuration names in so many bytes,
// or the default one when none is named; and for a configuration that
// names its socket once and plainly, the one Go's decoder reads.
func FuzzFrontSocket(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"k8s","type":"sluice","socket":"/run/sluice/cni.sock"}`,
		`{"type":"sluice"}`,
		`{"socket" : "/a","socket":"/b"}`,
		`{"socket":"\/escaped"}`,
		`{"socket":""}`,
		`{"socket":7}`,
		`{"name":"socket","x":{"socket":"/nested"},"socket":"/top"}`,
		`"socket"`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, conf []byte) {
		path, ok, err := Socket(conf)
		if err != nil {
			t.Fatal(err)
		}
		named := socketKey.Match(conf)
		if ok {
			if path == "" || len(path) >= MaxSocket || strings.ContainsFunc(path, notPlain) || strings.Contains(path, `"`) {
				t.Fatalf("socket %q from %q: not a plain path that fits", path, conf)
			}
			if named && !names(conf, path) {
				t.Fatalf("socket %q is not what %q names", path, conf)
			}
			if !named && path != cniproto.DefaultSocketPath {
				t.Fatalf("socket %q from %q, which names none: want the default", path, conf)
			}
		} else if !named {
			t.Fatalf("%q names no socket, yet the front falls back", conf)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(conf, &top) != nil || bytes.Count(conf, []byte(`"socket"`)) != 1 {
			return
		}
		var want string
		if raw, has := top["socket"]; has && (json.Unmarshal(raw, &want) != nil || bytes.ContainsFunc(raw, notPlain)) {
			return // not a plain ASCII string: falling back is right
		}
		if want == "" && named {
			return
		}
		if want == "" {
			want = cniproto.DefaultSocketPath
		}
		if len(want) < MaxSocket && (!ok || path != want) {
			t.Fatalf("%q: front dials %q (ok %v), Go reads %q", conf, path, ok, want)
		}
	})
}

// front_reply reads a reply frame as cniproto does: what it runs is what
// DecodeExecReply decodes, and anything else falls back or waits for more.
func FuzzFrontReply(f *testing.F) {
	frame := func(body []byte) []byte {
		return binary.BigEndian.AppendUint32(nil, uint32(len(body))) // the length prefix
	}
	for _, r := range []cniproto.ExecReply{{Stdout: []byte(`{"cniVersion":"1.0.0"}`)}, {ExitCode: 1, Stdout: []byte("x")}, {Fallback: true}, {}} {
		b := cniproto.EncodeExecReply(r)
		f.Add(append(frame(b), b...))
		f.Add(append(frame(b), b[:len(b)-1]...))
	}
	f.Add([]byte{0, 0, 0, 1, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		status, code, stdout, err := Reply(b)
		if err != nil {
			t.Fatal(err)
		}
		want := -1
		var r cniproto.ExecReply
		if len(b) >= 4 {
			n := binary.BigEndian.Uint32(b)
			switch {
			case n < 6 || n > cniproto.MaxMessageSize:
				want = 0
			case uint64(len(b)) < 4+uint64(n):
				want = -1
			default:
				var derr error
				if r, derr = cniproto.DecodeExecReply(b[4 : 4+n]); derr != nil || r.Fallback {
					want = 0
				} else {
					want = 1
				}
			}
		}
		if status != want {
			t.Fatalf("%x: front says %d, cniproto %d", b, status, want)
		}
		if want == 1 && (code != int(r.ExitCode) || !bytes.Equal(stdout, r.Stdout)) {
			t.Fatalf("%x: front runs exit %d %q, cniproto %d %q", b, code, stdout, r.ExitCode, r.Stdout)
		}
	})
}
