package agent

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicenet/sluice/pkg/datapath"
)

var (
	descSNATPackets = prometheus.NewDesc("sluice_egress_snat_packets_total",
		"Packets SNATed to the egress IP on this Node, from the SNAT rule's counter.", []string{"egress", "egress_ip"}, nil)
	descSNATBytes = prometheus.NewDesc("sluice_egress_snat_bytes_total",
		"Bytes SNATed to the egress IP on this Node, from the SNAT rule's counter.", []string{"egress", "egress_ip"}, nil)
	descSelected = prometheus.NewDesc("sluice_egress_selected_pods",
		"Pods the Egress applies to, cluster-wide and on this Node.", []string{"egress", "scope"}, nil)
	descTunnelDrops = prometheus.NewDesc("sluice_tunnel_dropped_packets_total",
		"Packets the tunnel guard dropped on this Node, by reason: not-from-node (to the tunnel port from a host that is not a Node), "+
			"from-pod (a forwarded packet to a tunnel port), not-selected (out of the tunnel, neither a reply nor from a Pod of an Egress held here).",
		[]string{"reason"}, nil)
	descExitDrops = prometheus.NewDesc("sluice_exit_guard_dropped_packets_total",
		"Packets of selected Pods the exit guard (nftables, after NAT) dropped on this Node's uplink instead of sending them with a wrong source, "+
			"by reason: invalid (conntrack INVALID or untracked, which skips NAT), wrong-source (not SNATed to the egress IP this Node holds for the Pod), "+
			"un-nated (a Pod selected until moments ago leaving with its own IP, from a conntrack entry of its tunnel days); "+
			"and no-connection: TCP packets from outside to an egress IP held here that belong to no connection (a moved IP's old connections), dropped instead of answered with a reset.",
		[]string{"reason"}, nil)
	descMembers = prometheus.NewDesc("sluice_gossip_members",
		"Gossip members by state as this Node sees them.", []string{"state"}, nil)
)

// Collector reads the datapath's rule counters at scrape time, so the
// figures are the kernel's own and cost nothing between scrapes. A read is
// kept for CacheFor, so a flood of scrapes costs one iptables-save per
// table per CacheFor, not one per scrape.
type Collector struct {
	Datapath Datapath
	Agent    *Agent // for Egress names and selection counts; may be nil
	// CacheFor is how long one read of the counters serves scrapes; 0
	// means DefaultStatsCache.
	CacheFor time.Duration

	mu    sync.Mutex
	at    time.Time
	stats datapath.Stats
	reads int // kernel reads, for tests
}

// DefaultStatsCache is Collector.CacheFor's default.
const DefaultStatsCache = time.Second

// readStats returns the cached counters, reading them again when older
// than CacheFor. Concurrent scrapes wait for one read.
func (c *Collector) readStats() (datapath.Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ttl := c.CacheFor
	if ttl == 0 {
		ttl = DefaultStatsCache
	}
	if !c.at.IsZero() && time.Since(c.at) < ttl {
		return c.stats, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Datapath.Stats(ctx)
	c.reads++
	if err != nil {
		return st, err
	}
	c.stats, c.at = st, time.Now()
	return st, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSNATPackets
	ch <- descSNATBytes
	ch <- descSelected
	ch <- descTunnelDrops
	ch <- descExitDrops
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	names := map[string]string{}
	if c.Agent != nil {
		for _, ep := range c.Agent.LastPlan().Egresses {
			if ep.IP.IsValid() {
				names[ep.IP.String()] = ep.Name
			}
			ch <- prometheus.MustNewConstMetric(descSelected, prometheus.GaugeValue, float64(ep.PodsCluster), ep.Name, "cluster")
			ch <- prometheus.MustNewConstMetric(descSelected, prometheus.GaugeValue, float64(ep.PodsHere), ep.Name, "node")
		}
	}
	st, err := c.readStats()
	if err != nil {
		return
	}
	type sum struct{ p, b uint64 }
	sums := map[string]sum{}
	drops := map[string]uint64{}
	for _, r := range st.Rules {
		if r.DropReason != "" {
			drops[r.DropReason] += r.Packets
		}
		if r.Table != "nat" || !r.EgressIP.IsValid() {
			continue
		}
		s := sums[r.EgressIP.String()]
		s.p += r.Packets
		s.b += r.Bytes
		sums[r.EgressIP.String()] = s
	}
	for ip, s := range sums {
		ch <- prometheus.MustNewConstMetric(descSNATPackets, prometheus.CounterValue, float64(s.p), names[ip], ip)
		ch <- prometheus.MustNewConstMetric(descSNATBytes, prometheus.CounterValue, float64(s.b), names[ip], ip)
	}
	for reason, n := range drops {
		ch <- prometheus.MustNewConstMetric(descTunnelDrops, prometheus.CounterValue, float64(n), reason)
	}
	for _, reason := range datapath.ExitDropReasons {
		ch <- prometheus.MustNewConstMetric(descExitDrops, prometheus.CounterValue, float64(st.ExitDrops[reason]), reason)
	}
}

// MemberCollector reports the gossip view.
type MemberCollector struct {
	Members Members
}

// Describe implements prometheus.Collector.
func (c *MemberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descMembers }

// Collect implements prometheus.Collector.
func (c *MemberCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"alive": 0, "dead": 0}
	for _, m := range c.Members.Members() {
		counts[string(m.State)]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(n), state)
	}
}
