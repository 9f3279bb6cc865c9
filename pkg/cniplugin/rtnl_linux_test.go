package cniplugin

import (
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// msg is one netlink message of the given type, flags, sequence and payload.
func msg(typ, flags uint16, seq uint32, data []byte) syscall.NetlinkMessage {
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ, Flags: flags, Seq: seq}, Data: data}
}

// errMsg is an NLMSG_ERROR carrying -errno (0: an ack).
func errMsg(seq uint32, errno syscall.Errno) syscall.NetlinkMessage {
	b := make([]byte, 4)
	nl.NativeEndian().PutUint32(b, uint32(-int32(errno)))
	return msg(unix.NLMSG_ERROR, 0, seq, b)
}

// TestAnswer feeds answer the message sequences the kernel sends, without a
// socket: when each kind of request ends, and what it yields.
func TestAnswer(t *testing.T) {
	const seq = 7
	link := msg(unix.RTM_NEWLINK, 0, seq, []byte("a"))
	for _, tc := range []struct {
		name     string
		reqFlags uint16
		msgs     []syscall.NetlinkMessage
		doneAt   int    // index of the message that completes it; -1: never
		err      string // part of the error that ends it; "" for none
		out      []string
	}{
		{"a get ends with its one answer", 0,
			[]syscall.NetlinkMessage{link, link}, 0, "", []string{"a"}},
		{"an earlier request's answers are skipped", 0,
			[]syscall.NetlinkMessage{msg(unix.RTM_NEWLINK, 0, seq-1, []byte("old")), errMsg(seq-1, unix.ENODEV), link}, 2, "", []string{"a"}},
		{"a get's error", 0,
			[]syscall.NetlinkMessage{errMsg(seq, unix.ENODEV)}, 0, unix.ENODEV.Error(), nil},
		{"an acked request ends with the ack", unix.NLM_F_ACK,
			[]syscall.NetlinkMessage{msg(unix.RTM_NEWLINK, 0, seq, []byte("x")), errMsg(seq, 0)}, 1, "", []string{"x"}},
		{"a dump runs to NLMSG_DONE", unix.NLM_F_DUMP,
			[]syscall.NetlinkMessage{
				msg(unix.RTM_NEWLINK, unix.NLM_F_MULTI, seq, []byte("1")),
				msg(unix.RTM_NEWADDR, unix.NLM_F_MULTI, seq, []byte("not wanted")),
				msg(unix.RTM_NEWLINK, unix.NLM_F_MULTI, seq, []byte("2")),
				msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, nil),
			}, 3, "", []string{"1", "2"}},
		{"a get answered in parts runs to NLMSG_DONE", 0,
			[]syscall.NetlinkMessage{
				msg(unix.RTM_NEWLINK, unix.NLM_F_MULTI, seq, []byte("1")),
				msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, nil),
			}, 1, "", []string{"1"}},
		{"a dump not done yet", unix.NLM_F_DUMP,
			[]syscall.NetlinkMessage{msg(unix.RTM_NEWLINK, unix.NLM_F_MULTI, seq, []byte("1"))}, -1, "", []string{"1"}},
		{"an interrupted dump", unix.NLM_F_DUMP,
			[]syscall.NetlinkMessage{
				msg(unix.RTM_NEWLINK, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, seq, []byte("1")),
				msg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, nil),
			}, 1, errDumpInterrupted.Error(), []string{"1"}},
		{"a short error message", 0,
			[]syscall.NetlinkMessage{msg(unix.NLMSG_ERROR, 0, seq, []byte{1})}, 0, "short error", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := answer{seq: seq, reqFlags: tc.reqFlags, want: unix.RTM_NEWLINK}
			doneAt := -1
			var err error
			for i, m := range tc.msgs {
				var done bool
				if done, err = a.add(m); done {
					doneAt = i
					break
				}
			}
			if doneAt != tc.doneAt {
				t.Fatalf("complete at message %d, want %d", doneAt, tc.doneAt)
			}
			if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
			var out []string
			for _, b := range a.out {
				out = append(out, string(b))
			}
			if !slices.Equal(out, tc.out) {
				t.Fatalf("out %q, want %q", out, tc.out)
			}
		})
	}
}
