package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// nsNameLabel is set on every Namespace by the API server (since 1.22). It
// is added when missing so hand-made views behave like a real cluster.
const nsNameLabel = "kubernetes.io/metadata.name"

// PodKey names a Pod.
type PodKey struct {
	Namespace, Name string
}

func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

func comparePodKey(a, b PodKey) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// PodInfo is what selection needs from a Pod. The helper fills it from the
// Pod informer, and may add IPs the CNI plugin reported before the kubelet
// wrote status.podIPs (that is how a new Pod is covered from its first packet).
type PodInfo struct {
	Namespace, Name string
	Labels          map[string]string
	IPs             []netip.Addr
	Node            string
	Phase           corev1.PodPhase
	HostNetwork     bool
}

// PodInfoFromPod extracts a PodInfo from a Pod object. Unparsable IPs are
// dropped.
func PodInfoFromPod(p *corev1.Pod) PodInfo {
	info := PodInfo{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Labels:      p.Labels,
		Node:        p.Spec.NodeName,
		Phase:       p.Status.Phase,
		HostNetwork: p.Spec.HostNetwork,
	}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			info.IPs = append(info.IPs, a.Unmap())
		}
	}
	if len(info.IPs) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			info.IPs = append(info.IPs, a.Unmap())
		}
	}
	return info
}

// eligible reports whether a Pod can be selected at all: hostNetwork Pods
// send as the Node, finished Pods send nothing, and a Pod without an IP has
// nothing to match on.
func (p *PodInfo) eligible() bool {
	return !p.HostNetwork && len(p.IPs) > 0 &&
		p.Phase != corev1.PodSucceeded && p.Phase != corev1.PodFailed
}

// View is the cluster as the helper sees it.
type View struct {
	Egresses []*v1alpha1.Egress
	Pods     []PodInfo
	// Namespaces maps a Namespace name to its labels. A Pod whose Namespace
	// is missing is selected only by Egresses without a namespaceSelector.
	Namespaces map[string]map[string]string
}

// Assignment is the Egress that applies to one Pod.
type Assignment struct {
	Egress string
	// Losers also select the Pod but lost on precedence, in precedence order.
	Losers []string
	Node   string
	IPs    []netip.Addr
}

// EgressResult is what one Egress selects.
type EgressResult struct {
	// Pods are the Pods this Egress applies to (it won them), sorted.
	Pods []PodKey
	// PodIPs are the IPs of Pods, sorted and without duplicates: the
	// contents of this Egress's ipset.
	PodIPs []netip.Addr
	// Shadowed are Pods it selects but an older Egress won, sorted.
	Shadowed []PodKey
	// Err is set when appliedTo is invalid; the Egress then selects nothing.
	Err error
}

// Result is the whole-cluster decision.
type Result struct {
	// Pods holds every selected Pod; unselected Pods are absent.
	Pods map[PodKey]Assignment
	// Egresses holds an entry for every Egress of the View, by name.
	Egresses map[string]*EgressResult
}

// LocalIPs returns, per Egress name, the sorted IPs of the Pods on node that
// the Egress applies to: what node's ipsets must hold.
func (r Result) LocalIPs(node string) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, a := range r.Pods {
		if a.Node == node {
			out[a.Egress] = append(out[a.Egress], a.IPs...)
		}
	}
	for name, ips := range out {
		out[name] = sortAddrs(ips)
	}
	return out
}

// Compute decides, for every Pod of v, which Egress applies. Selectors are
// compiled once, Namespace matches are computed once per Namespace, and
// Pods only meet the Egresses an index on their labels points at, so the
// cost grows with Pods × (labels + actual matches), not Pods × Egresses.
func Compute(v View) Result {
	egs := sortedEgresses(v.Egresses)
	res := Result{
		Pods:     make(map[PodKey]Assignment),
		Egresses: make(map[string]*EgressResult, len(egs)),
	}
	sels := make([]Selector, len(egs))
	for i, eg := range egs {
		er := &EgressResult{}
		res.Egresses[eg.Name] = er
		sels[i], er.Err = Compile(eg.Spec.AppliedTo)
	}
	idx := newIndex(sels, v.Namespaces)
	// Visit Pods in key order so every per-Egress Pod list comes out sorted
	// without sorting each one (shadowed lists can be long).
	order := make([]int, 0, len(v.Pods))
	for pi := range v.Pods {
		if v.Pods[pi].eligible() {
			order = append(order, pi)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		pa, pb := &v.Pods[a], &v.Pods[b]
		return comparePodKey(PodKey{pa.Namespace, pa.Name}, PodKey{pb.Namespace, pb.Name})
	})
	var matched []int
	for _, pi := range order {
		p := &v.Pods[pi]
		matched = idx.match(p, matched[:0])
		if len(matched) == 0 {
			continue
		}
		key := PodKey{p.Namespace, p.Name}
		win := egs[matched[0]].Name
		a := Assignment{Egress: win, Node: p.Node, IPs: p.IPs}
		if len(matched) > 1 {
			a.Losers = make([]string, 0, len(matched)-1)
			for _, i := range matched[1:] {
				a.Losers = append(a.Losers, egs[i].Name)
				er := res.Egresses[egs[i].Name]
				er.Shadowed = append(er.Shadowed, key)
			}
		}
		res.Pods[key] = a
		er := res.Egresses[win]
		er.Pods = append(er.Pods, key)
		er.PodIPs = append(er.PodIPs, p.IPs...)
	}
	for _, er := range res.Egresses {
		er.PodIPs = sortAddrs(er.PodIPs)
	}
	return res
}

func sortAddrs(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, netip.Addr.Compare)
	return slices.Compact(a)
}

// sortedEgresses returns a copy of egs in precedence order, nils dropped.
func sortedEgresses(egs []*v1alpha1.Egress) []*v1alpha1.Egress {
	out := make([]*v1alpha1.Egress, 0, len(egs))
	for _, eg := range egs {
		if eg != nil {
			out = append(out, eg)
		}
	}
	slices.SortFunc(out, Compare)
	return out
}

// nsLabelSet returns a Namespace's labels with the name label filled in,
// copying only when it is missing.
func nsLabelSet(name string, l map[string]string) labels.Set {
	if _, ok := l[nsNameLabel]; ok {
		return l
	}
	out := make(labels.Set, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	out[nsNameLabel] = name
	return out
}
