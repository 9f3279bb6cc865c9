package datapath

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
)

// AssignIDs gives every egress IP a mark id in 1..MaxID. IPs that had an id
// in previous keep it, so marks and tables survive restarts and changes of
// other Egresses; new IPs take the lowest free ids, in IP order so the
// result does not depend on input order. IPs beyond MaxID get no id (0).
func AssignIDs(previous map[netip.Addr]uint16, ips []netip.Addr) map[netip.Addr]uint16 {
	ips = sortedAddrs(ips)
	out := make(map[netip.Addr]uint16, len(ips))
	used := map[uint16]bool{}
	for _, ip := range ips {
		if id, ok := previous[ip]; ok && id >= 1 && id <= MaxID && !used[id] {
			out[ip] = id
			used[id] = true
		}
	}
	next := uint16(1)
	for _, ip := range ips {
		if _, ok := out[ip]; ok {
			continue
		}
		for next <= MaxID && used[next] {
			next++
		}
		if next > MaxID {
			break
		}
		out[ip] = next
		used[next] = true
	}
	return out
}

// Set names. ipset names are at most 31 characters, Egress names up to 253,
// so the per-Egress set is named by a hash of the Egress name.
const (
	setPrefix     = "SLUICE-"
	SetExcept     = "SLUICE-EXCEPT"
	SetNodes      = "SLUICE-NODES" // Node IPs: the only senders the tunnel takes
	egressSetBase = "SLUICE-EG-"
)

// EgressSetName is the ipset holding the Pod IPs an Egress selects.
func EgressSetName(egress string) string {
	sum := sha256.Sum256([]byte(egress))
	return egressSetBase + hex.EncodeToString(sum[:8])
}
