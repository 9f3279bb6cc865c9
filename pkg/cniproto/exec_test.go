package cniproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestExecFrameRoundTrip(t *testing.T) {
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=2", "CNI_PATH": ""}
	stdin := []byte("{\"name\":\"n\"}\x00tail")
	req, err := DecodeExec(EncodeExec(env, stdin))
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Env) != 3 || req.Env["CNI_ARGS"] != "A=1;B=2" || req.Env["CNI_PATH"] != "" || !bytes.Equal(req.Stdin, stdin) {
		t.Fatalf("decoded %+v", req)
	}
	for name, body := range map[string]string{
		"json":          `{"version":1}`,
		"unterminated":  "\x00SX1CNI_COMMAND=ADD",
		"no equals":     "\x00SX1CNI_COMMAND\x00\x00",
		"not forwarded": "\x00SX1LD_PRELOAD=/x.so\x00\x00",
		"twice":         "\x00SX1CNI_COMMAND=ADD\x00CNI_COMMAND=DEL\x00\x00",
	} {
		if _, err := DecodeExec([]byte(body)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	r, err := DecodeExecReply(EncodeExecReply(ExecReply{ExitCode: 7, Stdout: []byte("out")}))
	if err != nil || r.Fallback || r.ExitCode != 7 || string(r.Stdout) != "out" {
		t.Fatalf("reply %+v %v", r, err)
	}
	if r, err := DecodeExecReply(EncodeExecReply(ExecReply{Fallback: true})); err != nil || !r.Fallback {
		t.Fatalf("fallback reply %+v %v", r, err)
	}
}

// execRecorder answers with what it saw, so the test reads it back.
type execRecorder struct {
	got  chan ExecRequest
	same chan bool
	want *os.File
}

func (x *execRecorder) Exec(_ context.Context, req ExecRequest) ExecReply {
	same := false
	if req.Netns != nil {
		var a, b unix.Stat_t
		same = unix.Fstat(int(req.Netns.Fd()), &a) == nil && unix.Fstat(int(x.want.Fd()), &b) == nil &&
			a.Dev == b.Dev && a.Ino == b.Ino
	}
	x.same <- same
	x.got <- req
	return ExecReply{ExitCode: 3, Stdout: []byte("result")}
}

// sendExec sends one exec frame (with fd attached when not nil) as the C
// front does and returns the decoded reply.
func sendExec(t *testing.T, path string, body []byte, fd *os.File) ExecReply {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	frame = append(frame, body...)
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	if _, _, err := c.WriteMsgUnix(frame, oob, nil); err != nil {
		t.Fatal(err)
	}
	reply, err := ReadFrame(c, MaxMessageSize)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeExecReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestServerExecPassesNetnsFD(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	x := &execRecorder{got: make(chan ExecRequest, 4), same: make(chan bool, 4), want: f}
	path := startServer(t, &Server{Handler: &fakeHandler{added: map[Key]Attachment{}}, Exec: x})
	body := EncodeExec(map[string]string{"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0"}, []byte(`{"name":"n"}`))
	r := sendExec(t, path, body, f)
	if r.Fallback || r.ExitCode != 3 || string(r.Stdout) != "result" {
		t.Fatalf("reply %+v", r)
	}
	if !<-x.same {
		t.Fatal("the handler did not get the descriptor the client sent")
	}
	if req := <-x.got; req.Env["CNI_IFNAME"] != "eth0" || string(req.Stdin) != `{"name":"n"}` {
		t.Fatalf("handler got %+v", req)
	}
	// Commands the front never forwards, and a server without Exec, fall back.
	if r := sendExec(t, path, EncodeExec(map[string]string{"CNI_COMMAND": "VERSION"}, nil), nil); !r.Fallback {
		t.Fatalf("VERSION: %+v", r)
	}
	bare := startServer(t, &Server{Handler: &fakeHandler{added: map[Key]Attachment{}}})
	if r := sendExec(t, bare, body, nil); !r.Fallback {
		t.Fatalf("no Exec handler: %+v", r)
	}
}

// TestServerExecRefusedFallsBack: a peer the authorizer refuses gets
// Fallback, and the exec'd plugin then meets the same refusal itself.
func TestServerExecRefusedFallsBack(t *testing.T) {
	x := &execRecorder{got: make(chan ExecRequest, 1), same: make(chan bool, 1)}
	deny := func(PeerCred, Kind) error { return os.ErrPermission }
	path := startServer(t, &Server{Handler: &fakeHandler{added: map[Key]Attachment{}}, Exec: x, Authorize: deny})
	if r := sendExec(t, path, EncodeExec(map[string]string{"CNI_COMMAND": "DEL"}, nil), nil); !r.Fallback {
		t.Fatalf("refused exec: %+v", r)
	}
	if len(x.got) != 0 {
		t.Fatal("a refused exec reached the handler")
	}
}

// FuzzDecodeExec: no input may panic the exec decoder, and what decodes
// re-encodes to the same request.
func FuzzDecodeExec(f *testing.F) {
	f.Add(EncodeExec(map[string]string{"CNI_COMMAND": "ADD", "CNI_ARGS": "K=V"}, []byte(`{"name":"n"}`)))
	f.Add([]byte("\x00SX1\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeExec(data)
		if err != nil {
			return
		}
		again, err := DecodeExec(EncodeExec(req.Env, req.Stdin))
		if err != nil || len(again.Env) != len(req.Env) || !bytes.Equal(again.Stdin, req.Stdin) {
			t.Fatalf("re-encode: %+v %v", again, err)
		}
		for k, v := range req.Env {
			if again.Env[k] != v {
				t.Fatalf("%s: %q != %q", k, again.Env[k], v)
			}
		}
	})
}
