package inspect

import "errors"

// ErrNotFound is returned by Explain for a Pod the helper does not know.
var ErrNotFound = errors.New("not found")

// EgressRow is one Egress as this helper sees it.
type EgressRow struct {
	Name           string   `json:"name"`
	EgressIP       string   `json:"egressIP"`
	Pool           string   `json:"pool,omitempty"`
	Node           string   `json:"node"`
	HeldHere       bool     `json:"heldHere"`
	PodsHere       int      `json:"podsHere"`
	PodsCluster    int      `json:"podsCluster"`
	Mark           string   `json:"mark,omitempty"`
	Table          int      `json:"table,omitempty"`
	OverlapLosers  []string `json:"overlapLosers,omitempty"`  // Pods it selects but another Egress wins
	ConditionsNote string   `json:"conditionsNote,omitempty"` // e.g. "NoEligibleNode"
}

// PodRow is one Pod on this Node.
type PodRow struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	IPs       []string `json:"ips"`
	HostVeth  string   `json:"hostVeth,omitempty"`
	Egress    string   `json:"egress,omitempty"` // the Egress that applies, if any
	Losers    []string `json:"losers,omitempty"` // other Egresses that select it too
	FromCNI   bool     `json:"fromCNI"`          // reported by the CNI plugin
}

// Counter is one kernel object's packet and byte counters.
type Counter struct {
	Object  string `json:"object"` // e.g. "nat/SLUICE-POSTROUTING rule 2"
	Detail  string `json:"detail"` // the rule, set or route, as text
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// DatapathReport lists what Sluice installed on this Node.
type DatapathReport struct {
	Node     string    `json:"node"`
	Tunnel   string    `json:"tunnel"`
	HeldIPs  []string  `json:"heldIPs"`
	Rules    []string  `json:"rules"`  // ip rules
	Routes   []string  `json:"routes"` // routes in Sluice's tables
	IPSets   []string  `json:"ipsets"` // set name and member count
	Counters []Counter `json:"counters"`
}

// Explanation is one Pod's whole egress path.
type Explanation struct {
	Namespace  string    `json:"namespace"`
	Name       string    `json:"name"`
	Node       string    `json:"node"`
	PodIPs     []string  `json:"podIPs"`
	Egress     string    `json:"egress,omitempty"`
	Why        []string  `json:"why"` // selection reasoning, overlap decisions
	EgressIP   string    `json:"egressIP,omitempty"`
	EgressNode string    `json:"egressNode,omitempty"`
	Path       string    `json:"path"` // "local SNAT", "tunnel to node-b", "node IP (no Egress)"
	Mark       string    `json:"mark,omitempty"`
	Table      int       `json:"table,omitempty"`
	TunnelPeer string    `json:"tunnelPeer,omitempty"`
	SNATIP     string    `json:"snatIP,omitempty"`
	Counters   []Counter `json:"counters,omitempty"`
}
