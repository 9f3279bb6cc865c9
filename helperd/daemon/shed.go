package daemon

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// shedListener accepts at most total connections at once, and perSource
// from any one address; it closes the others at once.
type shedListener struct {
	net.Listener
	total, perSource int

	mu     sync.Mutex
	open   int
	bySrc  map[netip.Addr]int
	Denied atomic.Uint64
}

func newShedListener(ln net.Listener, total, perSource int) *shedListener {
	return &shedListener{Listener: ln, total: total, perSource: perSource, bySrc: map[netip.Addr]int{}}
}

func (l *shedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var src netip.Addr
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			src = ap.Addr().Unmap()
		}
		l.mu.Lock()
		if l.open >= l.total || l.bySrc[src] >= l.perSource {
			l.mu.Unlock()
			l.Denied.Add(1)
			_ = c.Close()
			continue
		}
		l.open++
		l.bySrc[src]++
		l.mu.Unlock()
		return &shedConn{Conn: c, release: func() {
			l.mu.Lock()
			l.open--
			if l.bySrc[src]--; l.bySrc[src] <= 0 {
				delete(l.bySrc, src)
			}
			l.mu.Unlock()
		}}, nil
	}
}

type shedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *shedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
