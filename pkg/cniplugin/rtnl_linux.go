package cniplugin

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// rtconn is one route netlink socket with a receive buffer it keeps.
// netlink's own Receive allocates and zeroes a fresh 64 KiB buffer for every
// message it reads; in the helper, which serves every ADD of its Node, that
// churned the heap enough that each ADD took page faults (≈30 µs each on a
// VM). Requests are still built and answers still parsed by netlink's nl
// package; only the socket round trip is here.
type rtconn struct {
	mu  sync.Mutex
	fd  int
	buf []byte
}

// rtconnTimeout bounds one answer; the kernel answers at once.
const rtconnTimeout = 5 * time.Second

// errDumpInterrupted: links changed during a dump; ask again.
var errDumpInterrupted = errors.New("netlink dump interrupted")

// dialRoute opens a route netlink socket in the caller's namespace.
func dialRoute() (*rtconn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(rtconnTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return &rtconn{fd: fd, buf: make([]byte, 64<<10)}, nil
}

func (c *rtconn) Close() error { return unix.Close(c.fd) }

// do sends req and returns copies of the payloads of its answers of type
// want (see answer for when the answer ends).
func (c *rtconn) do(req *nl.NetlinkRequest, want uint16) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := unix.Sendto(c.fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	a := answer{seq: req.Seq, reqFlags: req.Flags, want: want}
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return nil, fmt.Errorf("netlink answer: %w", err)
		}
		for _, m := range msgs {
			if done, err := a.add(m); done {
				return a.out, err
			}
		}
	}
}

// answer gathers the kernel's answer to one request. A request without
// NLM_F_ACK or NLM_F_DUMP ends with its one answer; otherwise the kernel's
// ack or NLMSG_DONE ends it. Answers to an earlier request (one that timed
// out) are skipped by sequence number.
type answer struct {
	seq         uint32
	reqFlags    uint16
	want        uint16
	out         [][]byte
	interrupted bool // a dump saw NLM_F_DUMP_INTR
}

// add takes one message and says whether the answer is complete, and if
// so, what went wrong, if anything.
func (a *answer) add(m syscall.NetlinkMessage) (done bool, err error) {
	if m.Header.Seq != a.seq {
		return false, nil
	}
	if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
		a.interrupted = true
	}
	switch m.Header.Type {
	case unix.NLMSG_DONE:
		if a.interrupted {
			return true, errDumpInterrupted
		}
		return true, nil
	case unix.NLMSG_ERROR:
		if len(m.Data) < 4 {
			return true, errors.New("netlink: short error message")
		}
		if errno := -int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
			return true, syscall.Errno(errno)
		}
		return true, nil
	case a.want:
		a.out = append(a.out, bytes.Clone(m.Data))
	}
	return m.Header.Flags&unix.NLM_F_MULTI == 0 && a.reqFlags&(unix.NLM_F_ACK|unix.NLM_F_DUMP) == 0, nil
}
