package cluster

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// AddHost plugs a host that is not a Node into the lan at ip (a LAN
// neighbour, or an adversary). It is removed with the cluster.
func (c *Cluster) AddHost(name string, ip netip.Addr) (*nstest.NS, error) {
	n, err := c.newNS(c.tag + "-" + name)
	if err != nil {
		return nil, err
	}
	if err := c.plug(n, name, ip.String()); err != nil {
		return n, err
	}
	return n, nil
}

// Injection is one forged VXLAN frame flow: from a namespace (a LAN host
// or a Pod), inner source Spoof to Inner, framed for Node's tunnel MAC
// and sent to the outer address Outer (a Node IP or an egress IP).
type Injection struct {
	From  *nstest.NS
	Spoof netip.Addr
	Node  *Node
	Outer netip.Addr
	Inner netip.AddrPort
}

func (i Injection) String() string {
	return fmt.Sprintf("%s: %v→%v in a frame for %s at %v", i.From.Name, i.Spoof, i.Inner, i.Node.Name, i.Outer)
}

// Inject sends count frames for every injection, with the cluster's
// tunnel VNI and port (the defaults), as any host or Pod with a UDP socket
// can. The injecting device is removed afterwards.
func Inject(injections []Injection, count int) error {
	var errs []error
	for k, in := range injections {
		j, err := nstest.NewInjector(in.From, fmt.Sprintf("inj%d", k), datapath.DefaultVNI, datapath.DefaultTunnelPort, in.Spoof)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := j.Inject(datapath.TunnelMAC(in.Node.IP), in.Outer, in.Inner, count); err != nil {
			errs = append(errs, fmt.Errorf("%v: %w", in, err))
		}
		errs = append(errs, j.Close())
	}
	return errors.Join(errs...)
}
