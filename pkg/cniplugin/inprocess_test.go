package cniplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// slowHandler is a helper registry whose Add takes delay.
type slowHandler struct {
	mu    sync.Mutex
	delay time.Duration
	added []cniproto.Attachment
}

func (h *slowHandler) Add(ctx context.Context, a cniproto.Attachment) error {
	select {
	case <-time.After(h.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.added = append(h.added, a)
	return nil
}
func (h *slowHandler) Del(context.Context, cniproto.Key) error           { return nil }
func (h *slowHandler) Check(context.Context, cniproto.Key) (bool, error) { return true, nil }
func (h *slowHandler) GC(context.Context, []cniproto.Key) (int, error)   { return 0, nil }
func (h *slowHandler) List(context.Context) []cniproto.Attachment        { return nil }

func TestInProcessExec(t *testing.T) {
	// Any file but our own netns stands for the Pod's: the fake kernel
	// never looks into it.
	podNS, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	ownNS, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ownNS.Close()
	spool := t.TempDir()
	extra := `,"spoolDir":"` + spool + `","timeout":"200ms"`
	env := func(cmd string, drop ...string) map[string]string {
		e := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/pod",
			"CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"}
		for _, d := range drop {
			delete(e, d)
		}
		return e
	}
	kernel := func(string) Kernel {
		return &fakeKernel{peer: HostLink{Name: "veth1234", Index: 7}, links: map[int]HostLink{7: {Name: "veth1234"}}}
	}

	t.Run("add", func(t *testing.T) {
		h := &slowHandler{}
		x := &InProcess{Handler: h, Kernel: kernel}
		r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", extra, true), Netns: podNS})
		if r.Fallback || r.ExitCode != 0 || !strings.Contains(string(r.Stdout), `"veth1234"`) {
			t.Fatalf("reply %+v %s", r, r.Stdout)
		}
		if len(h.added) != 1 || h.added[0].HostVeth != "veth1234" || h.added[0].PodName != "p" || h.added[0].Netns != "/run/netns/pod" {
			t.Fatalf("helper got %+v", h.added)
		}
	})
	t.Run("slow ack fails open into the spool", func(t *testing.T) {
		x := &InProcess{Handler: &slowHandler{delay: time.Minute}, Kernel: kernel}
		r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", extra, true), Netns: podNS})
		if r.Fallback || r.ExitCode != 0 {
			t.Fatalf("reply %+v %s", r, r.Stdout)
		}
		if ents, err := cniproto.ReadSpool(spool); err != nil || len(ents) != 1 {
			t.Fatalf("spool %+v %v", ents, err)
		}
	})
	t.Run("slow ack with failClosed is try-again-later", func(t *testing.T) {
		x := &InProcess{Handler: &slowHandler{delay: time.Minute}, Kernel: kernel}
		r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", extra+`,"failClosed":true`, true), Netns: podNS})
		var e struct {
			Code int `json:"code"`
		}
		if r.Fallback || r.ExitCode != 1 || json.Unmarshal(r.Stdout, &e) != nil || e.Code != 11 {
			t.Fatalf("reply %+v %s", r, r.Stdout)
		}
	})
	t.Run("verb error prints like skel", func(t *testing.T) {
		x := &InProcess{Handler: &slowHandler{}, Kernel: kernel}
		r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", extra, false), Netns: podNS})
		if r.Fallback || r.ExitCode != 1 || !strings.Contains(string(r.Stdout), "chained after a primary plugin") ||
			!strings.HasPrefix(string(r.Stdout), "{\n    \"code\": ") {
			t.Fatalf("reply %+v %s", r, r.Stdout)
		}
	})
	t.Run("no access to the Pod's netns falls back", func(t *testing.T) {
		h := &slowHandler{}
		x := &InProcess{Handler: h, Kernel: func(string) Kernel { return &noAccessKernel{} }}
		r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", extra, true), Netns: podNS})
		if !r.Fallback || len(h.added) != 0 {
			t.Fatalf("reply %+v %s, helper got %v", r, r.Stdout, h.added)
		}
	})
	// The front picks the socket by a plain scan (plugin/shim/front.h);
	// the helper it reached runs the call only when the configuration's
	// socket is its own, and the plugin binary reports to any other.
	t.Run("another helper's socket falls back", func(t *testing.T) {
		for sock, want := range map[string]bool{"/run/sluice/a.sock": false, "/run/sluice//a.sock": false, "/run/sluice/b.sock": true, "": true} {
			h := &slowHandler{}
			x := &InProcess{Handler: h, Kernel: kernel, Socket: "/run/sluice/a.sock"}
			conf := extra
			if sock != "" {
				conf += `,"socket":"` + sock + `"`
			}
			r := x.Exec(context.Background(), cniproto.ExecRequest{Env: env("ADD"), Stdin: stdin("1.0.0", conf, true), Netns: podNS})
			if r.Fallback != want || (want && len(h.added) != 0) {
				t.Errorf("socket %q: fallback %v (helper got %d), want %v", sock, r.Fallback, len(h.added), want)
			}
		}
	})
	for name, req := range map[string]cniproto.ExecRequest{
		"VERSION":               {Env: env("VERSION"), Stdin: stdin("1.0.0", extra, true)},
		"no CNI_PATH":           {Env: env("ADD", "CNI_PATH"), Stdin: stdin("1.0.0", extra, true), Netns: podNS},
		"bad container ID":      {Env: map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "a b", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, Stdin: stdin("1.0.0", extra, true)},
		"unsupported version":   {Env: env("ADD"), Stdin: stdin("9.9.9", extra, true), Netns: podNS},
		"CHECK on 0.3.1":        {Env: env("CHECK"), Stdin: stdin("0.3.1", extra, true), Netns: podNS},
		"no network name":       {Env: env("ADD"), Stdin: []byte(`{"cniVersion":"1.0.0","type":"sluice"}`), Netns: podNS},
		"ADD without netns":     {Env: env("ADD"), Stdin: stdin("1.0.0", extra, true)},
		"bad timeout":           {Env: env("ADD"), Stdin: stdin("1.0.0", `,"timeout":"soon"`, true), Netns: podNS},
		"not JSON":              {Env: env("ADD"), Stdin: []byte(`{"cniVersion":`), Netns: podNS},
		"netns is the helper's": {Env: env("ADD"), Stdin: stdin("1.0.0", extra, true), Netns: ownNS},
	} {
		t.Run("falls back: "+name, func(t *testing.T) {
			h := &slowHandler{}
			x := &InProcess{Handler: h, Kernel: kernel}
			if r := x.Exec(context.Background(), req); !r.Fallback {
				t.Fatalf("reply %+v %s", r, r.Stdout)
			}
			if len(h.added) != 0 {
				t.Fatal("a fallback reached the helper")
			}
		})
	}
}

// noAccessKernel is a helper without CAP_SYS_ADMIN facing a netns it can
// only read from inside.
type noAccessKernel struct{ fakeKernel }

func (noAccessKernel) HostPeer(string, string) (HostLink, error) {
	return HostLink{}, fmt.Errorf("netlink socket in /proc/self/fd/7: %w", ErrNoNetnsAccess)
}
