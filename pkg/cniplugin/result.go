package cniplugin

import (
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// crossCheck makes sure the veth found through the kernel is one of the
// host-side interfaces the primary reported (sandbox empty). bridge reports
// [cni0, vethX, eth0] and ptp [vethX, eth0], so it is a membership test,
// not "the first host interface". A primary that lists no host interface
// at all is taken at the kernel's word.
func crossCheck(hostVeth string, ifaces []*current.Interface) error {
	var host []string
	for _, i := range ifaces {
		if i.Sandbox == "" {
			if i.Name == hostVeth {
				return nil
			}
			host = append(host, i.Name)
		}
	}
	if len(host) == 0 {
		return nil
	}
	return fmt.Errorf("host veth %s (peer of the pod interface) is not among the primary's host interfaces %v", hostVeth, host)
}

// podIPs returns the addresses of prevResult that belong to the Pod: those
// on a sandbox interface, or with no interface index at all.
func podIPs(r *current.Result) []string {
	var out []string
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(r.Interfaces) && r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		out = append(out, cniproto.IPOnly(ip.Address.String()))
	}
	return out
}
