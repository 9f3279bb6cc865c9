package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

type fakeReporter struct {
	err  error
	resp cniproto.Response
	got  []cniproto.Request
}

func (f *fakeReporter) Do(_ context.Context, r cniproto.Request) (cniproto.Response, error) {
	f.got = append(f.got, r)
	return f.resp, f.err
}

type fakeKernel struct {
	peer  HostLink
	links map[int]HostLink
}

func (k *fakeKernel) HostPeer(netns, _ string) (HostLink, error) {
	if netns == "" {
		return HostLink{}, errors.New("no netns")
	}
	return k.peer, nil
}
func (k *fakeKernel) SetAlias(i int, alias string) error {
	l := k.links[i]
	l.Index, l.Alias = i, alias
	k.links[i] = l
	return nil
}
func (k *fakeKernel) Tagged() ([]HostLink, error) {
	var out []HostLink
	for _, l := range k.links {
		if cniproto.IsTag(l.Alias) {
			out = append(out, l)
		}
	}
	return out, nil
}

const bridgePrev = `{"cniVersion":"%V","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:00:01"},{"name":"veth1234","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"0a:58:0a:f4:00:05","sandbox":"/run/netns/pod"}],"ips":[{%IPV"address":"10.244.0.5/24","gateway":"10.244.0.1","interface":2}]}`

func stdin(ver string, extra string, prev bool) []byte {
	s := `{"cniVersion":"` + ver + `","name":"net","type":"sluice"` + extra
	if prev {
		p := strings.ReplaceAll(bridgePrev, "%V", ver)
		if ver == "0.3.1" {
			p = strings.ReplaceAll(p, "%IPV", `"version":"4",`)
		} else {
			p = strings.ReplaceAll(p, "%IPV", "")
		}
		s += `,"prevResult":` + p
	}
	return []byte(s + "}")
}

func newTestPlugin(t *testing.T, in []byte, rep *fakeReporter) (*Plugin, *fakeKernel) {
	t.Helper()
	c, err := ParseConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	c.SpoolDir = t.TempDir()
	k := &fakeKernel{peer: HostLink{Name: "veth1234", Index: 7}, links: map[int]HostLink{7: {Name: "veth1234", Index: 7}}}
	return &Plugin{Config: c, Reporter: rep, Kernel: k, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}, k
}

func args(in []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/pod", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9", StdinData: in}
}

// captureStdout runs fn and returns what it printed.
func captureStdout(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	ferr := fn()
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out), ferr
}

func TestAddReportsTagsAndPassesThrough(t *testing.T) {
	for _, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			in := stdin(ver, "", true)
			rep := &fakeReporter{resp: cniproto.Response{OK: true}}
			p, k := newTestPlugin(t, in, rep)
			out, err := captureStdout(t, func() error { return p.Add(args(in)) })
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, `"cniVersion": "`+ver+`"`) || !strings.Contains(out, "veth1234") {
				t.Fatalf("output not the prevResult in %s: %s", ver, out)
			}
			if len(rep.got) != 1 || rep.got[0].Kind != cniproto.KindAdd {
				t.Fatalf("requests %+v", rep.got)
			}
			a := rep.got[0].Attachment
			if a.HostVeth != "veth1234" || a.HostIfIndex != 7 || a.PodName != "web" || a.PodNamespace != "default" ||
				len(a.PodIPs) != 1 || a.PodIPs[0] != "10.244.0.5" || a.Netns != "/run/netns/pod" {
				t.Fatalf("attachment %+v", a)
			}
			tag, err := cniproto.ParseTag(k.links[7].Alias)
			if err != nil || tag.Key != a.Key || tag.PodUID != a.PodUID {
				t.Fatalf("tag %q: %+v %v", k.links[7].Alias, tag, err)
			}
		})
	}
}

func TestAddWithoutPrevResult(t *testing.T) {
	in := stdin("1.0.0", "", false)
	p, _ := newTestPlugin(t, in, &fakeReporter{})
	err := p.Add(args(in))
	var cerr *types.Error
	if !errors.As(err, &cerr) || !strings.Contains(cerr.Msg, "chained after a primary plugin") {
		t.Fatalf("err = %v", err)
	}
}

func TestAddHelperDown(t *testing.T) {
	down := &cniproto.UnreachableError{Err: errors.New("dial: connection refused")}
	t.Run("fail open spools", func(t *testing.T) {
		in := stdin("1.0.0", "", true)
		p, _ := newTestPlugin(t, in, &fakeReporter{err: down})
		if _, err := captureStdout(t, func() error { return p.Add(args(in)) }); err != nil {
			t.Fatal(err)
		}
		ents, err := cniproto.ReadSpool(p.Config.SpoolDir)
		if err != nil || len(ents) != 1 || ents[0].Request.Attachment.PodIPs[0] != "10.244.0.5" {
			t.Fatalf("spool %+v %v", ents, err)
		}
	})
	t.Run("fail closed says try again", func(t *testing.T) {
		in := stdin("1.0.0", `,"failClosed":true`, true)
		p, _ := newTestPlugin(t, in, &fakeReporter{err: down})
		err := p.Add(args(in))
		var cerr *types.Error
		if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater {
			t.Fatalf("err = %v", err)
		}
		if ents, _ := cniproto.ReadSpool(p.Config.SpoolDir); len(ents) != 0 {
			t.Fatalf("fail-closed ADD spooled %d entries", len(ents))
		}
	})
}

func TestDelIdempotentAndNeverFails(t *testing.T) {
	in := stdin("0.3.1", `,"failClosed":true`, false)
	rep := &fakeReporter{err: &cniproto.UnreachableError{Err: errors.New("down")}}
	p, k := newTestPlugin(t, in, rep)
	tag, _ := cniproto.FormatTag(cniproto.Attachment{Key: cniproto.Key{ContainerID: "c1", IfName: "eth0"}})
	k.links[7] = HostLink{Name: "veth1234", Index: 7, Alias: tag}
	a := args(in)
	a.Netns = ""
	for i := 0; i < 2; i++ {
		if err := p.Del(a); err != nil {
			t.Fatalf("del %d: %v", i, err)
		}
	}
	if k.links[7].Alias != "" {
		t.Fatalf("tag not cleared: %q", k.links[7].Alias)
	}
	if ents, _ := cniproto.ReadSpool(p.Config.SpoolDir); len(ents) != 2 || ents[0].Request.Kind != cniproto.KindDel {
		t.Fatalf("spool %+v", ents)
	}
}

func TestCheckAndStatus(t *testing.T) {
	in := stdin("1.1.0", "", true)
	rep := &fakeReporter{resp: cniproto.Response{OK: true, Known: true}}
	p, k := newTestPlugin(t, in, rep)
	if err := p.Check(args(in)); err == nil {
		t.Fatal("check passed on an untagged veth")
	}
	tag, _ := cniproto.FormatTag(cniproto.Attachment{Key: cniproto.Key{ContainerID: "c1", IfName: "eth0"}})
	k.links[7] = HostLink{Name: "veth1234", Index: 7, Alias: tag}
	if err := p.Check(args(in)); err != nil {
		t.Fatal(err)
	}
	rep.resp.Known = false
	if err := p.Check(args(in)); err == nil || !strings.Contains(err.Error(), "does not know") {
		t.Fatalf("check with unknown attachment: %v", err)
	}
	rep.err = &cniproto.UnreachableError{Err: errors.New("down")}
	if err := p.Status(args(in)); err != nil {
		t.Fatalf("fail-open status: %v", err)
	}
	p.Config.FailClosed = true
	var cerr *types.Error
	if err := p.Status(args(in)); !errors.As(err, &cerr) || cerr.Code != errPluginNotAvailable {
		t.Fatalf("fail-closed status: %v", err)
	}
}

func TestGCSendsValidAttachments(t *testing.T) {
	in := []byte(`{"cniVersion":"1.1.0","name":"net","type":"sluice","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`)
	rep := &fakeReporter{resp: cniproto.Response{OK: true}}
	p, _ := newTestPlugin(t, in, rep)
	if err := p.GC(args(in)); err != nil {
		t.Fatal(err)
	}
	if len(rep.got) != 1 || len(rep.got[0].Valid) != 1 || rep.got[0].Valid[0].ContainerID != "c1" {
		t.Fatalf("gc request %+v", rep.got)
	}
}

func TestParseConfigDefaultsAndErrors(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"0.3.1","name":"n","type":"sluice"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != cniproto.DefaultSocketPath || c.SpoolDir != cniproto.DefaultSpoolDir || c.Timeout != time.Second || c.FailClosed {
		t.Fatalf("defaults %+v", c)
	}
	for _, bad := range []string{`{"timeout":"soon"}`, `{"timeout":"-1s"}`, `{"timeout":"5m"}`, `{`} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("ParseConfig(%s) succeeded", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	down := &cniproto.UnreachableError{Err: errors.New("x")}
	refused := errors.New("helper refused")
	tests := []struct {
		kind       cniproto.Kind
		failClosed bool
		err        error
		want       outcome
	}{
		{cniproto.KindAdd, false, nil, outcomeDone},
		{cniproto.KindAdd, false, down, outcomeSpool},
		{cniproto.KindAdd, true, down, outcomeRetry},
		{cniproto.KindAdd, false, refused, outcomeRetry},
		{cniproto.KindDel, true, down, outcomeSpool},
		{cniproto.KindDel, false, refused, outcomeSpool},
		{cniproto.KindCheck, false, down, outcomeIgnore},
		{cniproto.KindCheck, true, down, outcomeRetry},
		{cniproto.KindCheck, false, refused, outcomeFail},
		{cniproto.KindGC, false, down, outcomeIgnore},
	}
	for _, tt := range tests {
		if got := decide(tt.kind, tt.failClosed, tt.err); got != tt.want {
			t.Errorf("decide(%s, %v, %v) = %d, want %d", tt.kind, tt.failClosed, tt.err, got, tt.want)
		}
	}
}

func TestCrossCheck(t *testing.T) {
	bridge := []*current.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/p"}}
	ptp := []*current.Interface{{Name: "veth2"}, {Name: "eth0", Sandbox: "/run/netns/p"}}
	onlyPod := []*current.Interface{{Name: "eth0", Sandbox: "/run/netns/p"}}
	tests := []struct {
		veth    string
		ifaces  []*current.Interface
		wantErr bool
	}{
		{"veth1", bridge, false},
		{"cni9", bridge, true},
		{"veth2", ptp, false},
		{"veth1", ptp, true},
		{"vethX", onlyPod, false},
	}
	for _, tt := range tests {
		if err := crossCheck(tt.veth, tt.ifaces); (err != nil) != tt.wantErr {
			t.Errorf("crossCheck(%s) err = %v, wantErr %v", tt.veth, err, tt.wantErr)
		}
	}
}

func TestPanicBecomesCNIError(t *testing.T) {
	f := run(func(*Plugin, *skel.CmdArgs) error { panic("boom") })
	log := t.TempDir() + "/sluice.log"
	err := f(&skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.0.0","name":"n","type":"sluice","logFile":"` + log + `"}`)})
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrInternal || !strings.Contains(cerr.Details, "boom") {
		t.Fatalf("err = %v", err)
	}
}

func TestInvalidConfigIsDecodingError(t *testing.T) {
	err := run((*Plugin).Add)(&skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.0.0","timeout":"x"}`)})
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrDecodingFailure {
		t.Fatalf("err = %v", err)
	}
}

// TestParseConfigPrevResultAsLibrary holds the one-pass prevResult decoding
// to what version.ParsePrevResult gives, printed in the network's version.
func TestParseConfigPrevResultAsLibrary(t *testing.T) {
	const ifs = `"interfaces":[{"name":"cni0","mac":"5a:13:5b:7e:6f:01"},{"name":"veth1","mac":"fe:2b:9c:11:22:33","mtu":1450},{"name":"eth0","sandbox":"/run/netns/p"}]`
	const ips100 = `"ips":[{"interface":2,"address":"10.244.0.5/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"}],"dns":{"nameservers":["192.0.2.53"]}`
	const ips040 = `"ips":[{"version":"4","interface":2,"address":"10.244.0.5/24","gateway":"10.244.0.1"}]`
	// decodes: the library gives a result (true), an error or nothing (false).
	for _, tc := range []struct {
		name, conf, prev string
		decodes          bool
	}{
		{"1.0.0", "1.0.0", `{"cniVersion":"1.0.0",` + ifs + `,` + ips100 + `}`, true},
		{"1.1.0", "1.1.0", `{"cniVersion":"1.1.0",` + ifs + `,` + ips100 + `}`, true},
		{"0.4.0", "0.4.0", `{"cniVersion":"0.4.0",` + ifs + `,` + ips040 + `}`, true},
		{"0.3.1 without its version", "0.3.1", `{` + ifs + `,` + ips040 + `}`, true},
		{"1.0.0 without its version", "1.0.0", `{` + ifs + `,` + ips100 + `}`, true},
		{"empty version", "1.0.0", `{"cniVersion":"",` + ifs + `,` + ips100 + `}`, false},
		{"older result", "1.0.0", `{"cniVersion":"0.4.0",` + ifs + `,` + ips040 + `}`, false},
		{"null", "1.0.0", `null`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := []byte(`{"cniVersion":"` + tc.conf + `","name":"n","type":"sluice","prevResult":` + tc.prev + `}`)
			var lib types.NetConf
			if err := json.Unmarshal(stdin, &lib); err != nil {
				t.Fatal(err)
			}
			libErr := version.ParsePrevResult(&lib)
			if decoded := libErr == nil && lib.PrevResult != nil; decoded != tc.decodes {
				t.Fatalf("the library decoded it: %v (%v), want %v", decoded, libErr, tc.decodes)
			}
			c, err := ParseConfig(stdin)
			if (err != nil) != (libErr != nil) {
				t.Fatalf("ParseConfig: %v; library: %v", err, libErr)
			}
			if err != nil {
				return
			}
			if (c.PrevResult == nil) != (lib.PrevResult == nil) {
				t.Fatalf("prevResult %v, library %v", c.PrevResult, lib.PrevResult)
			}
			if c.PrevResult == nil {
				return
			}
			print := func(r types.Result) string {
				v, err := r.GetAsVersion(tc.conf)
				if err != nil {
					return "error: " + err.Error()
				}
				var b strings.Builder
				if err := v.PrintTo(&b); err != nil {
					return "error: " + err.Error()
				}
				return b.String()
			}
			if got, want := print(c.PrevResult), print(lib.PrevResult); got != want {
				t.Fatalf("printed\n%s\nlibrary\n%s", got, want)
			}
			// What Add reads it as.
			_, err = current.NewResultFromResult(c.PrevResult)
			if _, libErr := current.NewResultFromResult(lib.PrevResult); (err != nil) != (libErr != nil) {
				t.Fatalf("as the current version: %v; library: %v", err, libErr)
			}
		})
	}
}
