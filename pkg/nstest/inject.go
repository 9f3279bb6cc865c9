//go:build linux

package nstest

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
)

// UDPSink counts the UDP datagrams that reach one address inside a
// namespace, by source address: what a server (or a Pod) actually saw.
type UDPSink struct {
	pc   net.PacketConn
	mu   sync.Mutex
	from map[string]int
	done chan struct{}
}

// ListenUDP starts a sink on addr (host:port) inside n. Close stops it.
func ListenUDP(n *NS, addr string) (*UDPSink, error) {
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, n.Name, err)
	}
	s := &UDPSink{pc: pc, from: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			_, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(src.String())
			s.mu.Lock()
			s.from[host]++
			s.mu.Unlock()
		}
	}()
	return s, nil
}

// Counts returns a copy of the datagrams received so far, by source.
func (s *UDPSink) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.from)
}

// Reset forgets what was received so far.
func (s *UDPSink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.from)
}

// Close stops the sink and waits for its reader.
func (s *UDPSink) Close() error {
	err := s.pc.Close()
	<-s.done
	return err
}

// SendUDP sends count datagrams from src to dst (both host:port; src's
// address must be one of n's, port 0 picks one) inside n.
func SendUDP(n *NS, src, dst netip.AddrPort, count int) error {
	return n.Do(func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for range count {
			if _, err := c.Write([]byte("injected")); err != nil {
				return fmt.Errorf("send %v→%v in %s: %w", src, dst, n.Name, err)
			}
		}
		return nil
	})
}

// Injector forges VXLAN frames from inside a namespace, as any host or
// Pod with a UDP socket can: a VXLAN device of the victim's VNI and port,
// with no remote of its own, whose address is the spoofed inner source.
// Each Inject points one inner destination at one Node's tunnel MAC and
// one outer destination.
type Injector struct {
	ns      *NS
	dev     string
	spoofed netip.Addr
}

// NewInjector makes the device dev in n.
func NewInjector(n *NS, dev string, vni, port int, spoofed netip.Addr) (*Injector, error) {
	for _, args := range [][]string{
		{"link", "add", dev, "type", "vxlan", "id", fmt.Sprint(vni), "dstport", fmt.Sprint(port), "nolearning"},
		{"link", "set", dev, "address", "02:66:66:66:66:66", "up"},
		{"addr", "add", spoofed.String() + "/32", "dev", dev},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			return nil, fmt.Errorf("ip %v in %s: %w: %s", args, n.Name, err, out)
		}
	}
	return &Injector{ns: n, dev: dev, spoofed: spoofed}, nil
}

// Inject sends count inner datagrams from the spoofed source to innerDst,
// framed for the tunnel MAC mac and carried to the outer address outer.
func (j *Injector) Inject(mac net.HardwareAddr, outer netip.Addr, innerDst netip.AddrPort, count int) error {
	dst := innerDst.Addr().String()
	for _, c := range [][]string{
		{"bridge", "fdb", "replace", mac.String(), "dev", j.dev, "dst", outer.String()},
		{"ip", "route", "replace", dst + "/32", "dev", j.dev, "src", j.spoofed.String()},
		{"ip", "neigh", "replace", dst, "lladdr", mac.String(), "dev", j.dev, "nud", "permanent"},
	} {
		if out, err := j.ns.Run(c[0], c[1:]...); err != nil {
			return fmt.Errorf("%v in %s: %w: %s", c, j.ns.Name, err, out)
		}
	}
	return SendUDP(j.ns, netip.AddrPortFrom(j.spoofed, 0), innerDst, count)
}

// Close removes the device, and with it its routes.
func (j *Injector) Close() error {
	if out, err := j.ns.Run("ip", "link", "del", j.dev); err != nil {
		return fmt.Errorf("ip link del %s in %s: %w: %s", j.dev, j.ns.Name, err, out)
	}
	return nil
}
