package cluster

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Wire counts, in an external server's raw PREROUTING (before conntrack,
// so INVALID packets count too), every IP packet to the server whose source
// is not one of the allowed addresses, and records each such source in an
// ipset. A test whose only clients of this server are selected Pods allows
// their egress IPs: any other source is a packet that left a Node's uplink
// wrong (a raw Pod IP, or the Node's own IP).
type Wire struct {
	ext *Ext
}

var (
	wireProtos = []string{"tcp", "udp", "icmp"}
	nodeICMP   = []string{"redirect", "host-unreachable", "time-exceeded"}
	protoNames = map[string]string{"6": "tcp", "17": "udp", "1": "icmp"}
)

const (
	wireChain = "SLUICE-TEST-WIRE"
	wireSet   = "SLUICE-TEST-WRONG"
)

// WatchWire starts counting at the server; Close removes the counters.
func (e *Ext) WatchWire(allowed ...netip.Addr) (*Wire, error) {
	w := &Wire{ext: e}
	w.Close()
	cmds := [][]string{
		{"ipset", "create", wireSet, "hash:ip"},
		{"iptables", "-w", "-t", "raw", "-N", wireChain},
	}
	for _, ip := range allowed {
		cmds = append(cmds, []string{"iptables", "-w", "-t", "raw", "-A", wireChain, "-s", ip.String(), "-j", "RETURN"})
	}
	// A Node that forwards a packet back out of the link it came in on
	// (the server still sending to an egress IP that moved) tells the
	// server so with an ICMP redirect from its own address; one that finds
	// no host for the server's packet (an egress IP freed since, still in
	// the server's ARP cache) answers host-unreachable, or time-exceeded
	// when Nodes' stale ARP entries for that IP point at each other. All are the
	// Node's own packets, not a Pod's: sent with TTL 64, where a Pod's
	// packet forwarded by its Node arrives with 63 at most. Counted apart,
	// and not wrong.
	for _, kind := range nodeICMP {
		cmds = append(cmds, []string{"iptables", "-w", "-t", "raw", "-A", wireChain, "-p", "icmp", "--icmp-type", kind, "-m", "ttl", "--ttl-eq", "64", "-j", "RETURN"})
	}
	for _, proto := range wireProtos { // counters only, to say what was seen
		cmds = append(cmds, []string{"iptables", "-w", "-t", "raw", "-A", wireChain, "-p", proto})
	}
	cmds = append(cmds,
		[]string{"iptables", "-w", "-t", "raw", "-A", wireChain, "-j", "SET", "--add-set", wireSet, "src", "--exist"},
		[]string{"iptables", "-w", "-t", "raw", "-I", "PREROUTING", "1", "-d", e.IP.String(), "-j", wireChain},
	)
	for _, c := range cmds {
		if out, err := e.NS.Run(c[0], c[1:]...); err != nil {
			w.Close()
			return nil, fmt.Errorf("watch the wire at %s: %s: %w: %s", e.Name, strings.Join(c, " "), err, out)
		}
	}
	return w, nil
}

var wireMember = regexp.MustCompile(`(?m)^(\d+\.\d+\.\d+\.\d+)$`)

// Wrong returns the sources seen so far that are not allowed, and the
// number of packets they sent (the SET rule's counter).
func (w *Wire) Wrong() ([]string, uint64, error) {
	out, err := w.ext.NS.Run("ipset", "list", wireSet)
	if err != nil {
		return nil, 0, fmt.Errorf("read the wrong sources at %s: %w: %s", w.ext.Name, err, out)
	}
	var sources []string
	for _, m := range wireMember.FindAllStringSubmatch(out, -1) {
		sources = append(sources, m[1])
	}
	slices.Sort(sources)
	out, err = w.ext.NS.Run("iptables", "-w", "-t", "raw", "-L", wireChain, "-v", "-x", "-n")
	if err != nil {
		return nil, 0, fmt.Errorf("read the wire counters at %s: %w: %s", w.ext.Name, err, out)
	}
	total, _ := w.counters(out)
	return sources, total, nil
}

// counters parses the chain's listing: the SET rule's packets, and the
// per-protocol counting rules' packets.
func (w *Wire) counters(out string) (uint64, map[string]uint64) {
	var total uint64
	by := map[string]uint64{}
	icmpRules := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch {
		case f[2] == "SET":
			total = n
		case protoNames[f[2]] != "": // a counting rule: iptables prints its protocol number
			by[protoNames[f[2]]] = n
		case f[2] == "RETURN" && f[3] == "1": // a Node's own ICMP, in nodeICMP's order
			by[nodeICMP[min(icmpRules, len(nodeICMP)-1)]+" from a Node (not wrong)"] = n
			icmpRules++
		}
	}
	return total, by
}

// String says what was seen, for failure messages.
func (w *Wire) String() string {
	sources, total, err := w.Wrong()
	if err != nil {
		return err.Error()
	}
	out, _ := w.ext.NS.Run("iptables", "-w", "-t", "raw", "-L", wireChain, "-v", "-x", "-n")
	_, by := w.counters(out)
	return fmt.Sprintf("%d packets from wrong sources %v (by protocol %v)", total, sources, by)
}

// Allow adds a source that is not wrong.
func (w *Wire) Allow(ip netip.Addr) error {
	if out, err := w.ext.NS.Run("iptables", "-w", "-t", "raw", "-I", wireChain, "1", "-s", ip.String(), "-j", "RETURN"); err != nil {
		return fmt.Errorf("allow %s at %s: %w: %s", ip, w.ext.Name, err, out)
	}
	return nil
}

// Close removes the counters; safe to call twice.
func (w *Wire) Close() {
	n := w.ext.NS
	_, _ = n.Run("iptables", "-w", "-t", "raw", "-D", "PREROUTING", "-d", w.ext.IP.String(), "-j", wireChain)
	_, _ = n.Run("iptables", "-w", "-t", "raw", "-F", wireChain)
	_, _ = n.Run("iptables", "-w", "-t", "raw", "-X", wireChain)
	_, _ = n.Run("ipset", "destroy", wireSet)
}

// Disallow takes back an Allow.
func (w *Wire) Disallow(ip netip.Addr) error {
	if out, err := w.ext.NS.Run("iptables", "-w", "-t", "raw", "-D", wireChain, "-s", ip.String(), "-j", "RETURN"); err != nil {
		return fmt.Errorf("disallow %s at %s: %w: %s", ip, w.ext.Name, err, out)
	}
	return nil
}
