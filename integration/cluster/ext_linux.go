package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// StreamPort is the external servers' long-lived echo port: every line a
// client sends is answered with the source address the server sees, on the
// same connection, so a test can watch one established flow over time.
const StreamPort = 8081

// Ext is an external server on the lan. It answers on WhoamiPort with the
// source IP it saw and closes, and on StreamPort once per line received.
// Its listeners are sockets created inside its namespace by the test
// process, so no extra binary runs.
type Ext struct {
	Name string
	IP   netip.Addr
	NS   *nstest.NS

	listeners []net.Listener
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
}

func (c *Cluster) newExt(tag string, k int) (*Ext, error) {
	name := "ext"
	if k > 0 {
		name = fmt.Sprintf("ext%d", k+1)
	}
	e := &Ext{Name: name, IP: ExtIP(k), conns: map[net.Conn]struct{}{}}
	var err error
	if e.NS, err = c.newNS(tag + "-" + name); err != nil {
		return nil, err
	}
	if err := c.plug(e.NS, name, e.IP.String()); err != nil {
		return e, err
	}
	for _, port := range []int{WhoamiPort, StreamPort} {
		l, err := listenIn(e.NS.Path, "tcp", net.JoinHostPort(e.IP.String(), strconv.Itoa(port)))
		if err != nil {
			e.close()
			return e, err
		}
		e.listeners = append(e.listeners, l)
		e.wg.Add(1)
		go e.serve(l, port == StreamPort)
	}
	return e, nil
}

// Addr is host:port of the one-shot whoami service.
func (e *Ext) Addr() string { return net.JoinHostPort(e.IP.String(), strconv.Itoa(WhoamiPort)) }

// StreamAddr is host:port of the long-lived echo service.
func (e *Ext) StreamAddr() string {
	return net.JoinHostPort(e.IP.String(), strconv.Itoa(StreamPort))
}

func (e *Ext) serve(l net.Listener, stream bool) {
	defer e.wg.Done()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		if !e.track(conn) {
			conn.Close()
			return
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer e.untrack(conn)
			src := sourceIP(conn)
			if !stream {
				_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = conn.Write([]byte(src + "\n"))
				return
			}
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				if _, err := conn.Write([]byte(src + "\n")); err != nil {
					return
				}
			}
		}()
	}
}

func (e *Ext) track(conn net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conns == nil {
		return false
	}
	e.conns[conn] = struct{}{}
	return true
}

func (e *Ext) untrack(conn net.Conn) {
	conn.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.conns, conn)
}

func sourceIP(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

// close stops the listeners and open connections and waits for the
// handlers.
func (e *Ext) close() {
	for _, l := range e.listeners {
		l.Close()
	}
	e.mu.Lock()
	for conn := range e.conns {
		conn.Close()
	}
	e.conns = nil
	e.mu.Unlock()
	e.wg.Wait()
}

// Whoami connects from inside the Pod to the server and returns the source
// address the server saw.
func (e *Ext) Whoami(ctx context.Context, p *Pod) (netip.Addr, error) {
	return e.WhoamiFrom(ctx, p.NS)
}

// WhoamiFrom is Whoami from any namespace (a Node's own traffic, say).
func (e *Ext) WhoamiFrom(ctx context.Context, from *nstest.NS) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := dialIn(ctx, from.Path, "tcp", e.Addr())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return readAddr(bufio.NewReader(conn))
}

func readAddr(r *bufio.Reader) (netip.Addr, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read whoami answer: %w", err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(line))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("whoami answer %q: %w", line, err)
	}
	return a, nil
}

// Stream is a long-lived connection to an external server's StreamPort.
type Stream struct {
	conn net.Conn
	r    *bufio.Reader
}

// OpenStream opens a long-lived connection from the Pod to the server.
func (e *Ext) OpenStream(ctx context.Context, p *Pod) (*Stream, error) {
	conn, err := dialIn(ctx, p.NS.Path, "tcp", e.StreamAddr())
	if err != nil {
		return nil, err
	}
	return &Stream{conn: conn, r: bufio.NewReader(conn)}, nil
}

// Ask sends one line and returns the source address the server saw for
// this connection, within timeout.
func (s *Stream) Ask(timeout time.Duration) (netip.Addr, error) {
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return netip.Addr{}, err
	}
	if _, err := s.conn.Write([]byte("?\n")); err != nil {
		return netip.Addr{}, fmt.Errorf("stream write: %w", err)
	}
	return readAddr(s.r)
}

// Close closes the connection.
func (s *Stream) Close() error { return s.conn.Close() }

var errNoExt = errors.New("cluster has no external server")

// Whoami asks the first external server which source address it saw from
// the Pod.
func (c *Cluster) Whoami(ctx context.Context, p *Pod) (netip.Addr, error) {
	if len(c.Ext) == 0 {
		return netip.Addr{}, errNoExt
	}
	return c.Ext[0].Whoami(ctx, p)
}
