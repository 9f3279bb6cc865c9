package policy

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// labelIndex finds the selectors that might match a label set without
// trying them all. Each selector is filed under one requirement it cannot
// match without: key=value for Equals/In (once per value), key for Exists,
// or in rest when it has no such requirement (NotIn, DoesNotExist, {}).
// Lookups return candidates only; the caller still runs Matches.
type labelIndex struct {
	byKV  map[string]map[string][]int
	byKey map[string][]int
	rest  []int
}

func newLabelIndex() *labelIndex {
	return &labelIndex{byKV: map[string]map[string][]int{}, byKey: map[string][]int{}}
}

func (x *labelIndex) add(i int, s labels.Selector) {
	reqs, _ := s.Requirements()
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			m := x.byKV[r.Key()]
			if m == nil {
				m = map[string][]int{}
				x.byKV[r.Key()] = m
			}
			for v := range r.Values() {
				m[v] = append(m[v], i)
			}
			return
		}
	}
	for _, r := range reqs {
		if r.Operator() == selection.Exists {
			x.byKey[r.Key()] = append(x.byKey[r.Key()], i)
			return
		}
	}
	x.rest = append(x.rest, i)
}

// candidates appends to dst the selectors filed under l's labels (not rest).
func (x *labelIndex) candidates(l map[string]string, dst []int) []int {
	for k, v := range l {
		if m := x.byKV[k]; m != nil {
			dst = append(dst, m[v]...)
		}
		dst = append(dst, x.byKey[k]...)
	}
	return dst
}

// bitset has one bit per Egress, in precedence order.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

// nsEntry is what one Namespace allows.
type nsEntry struct {
	// ok has the Egresses whose namespace half matches this Namespace.
	ok bitset
	// podAny are the Egresses in ok that need no Pod label check or sit in
	// the pod index's rest: every Pod of the Namespace must try them.
	podAny []int
}

// index is built once per Compute.
type index struct {
	sels       []Selector
	namespaces map[string]map[string]string
	noNSSel    bitset // active Egresses without a namespaceSelector
	nsIdx      *labelIndex
	podIdx     *labelIndex
	podRest    []int // active Egresses in podIdx.rest or without podSelector
	perNS      map[string]*nsEntry
	scratch    []int
}

func newIndex(sels []Selector, namespaces map[string]map[string]string) *index {
	x := &index{
		sels: sels, namespaces: namespaces,
		noNSSel: newBitset(len(sels)),
		nsIdx:   newLabelIndex(), podIdx: newLabelIndex(),
		perNS: map[string]*nsEntry{},
	}
	for i, s := range sels {
		if !s.active {
			continue
		}
		if s.ns == nil {
			x.noNSSel.set(i)
		} else {
			x.nsIdx.add(i, s.ns)
		}
		if s.pod == nil {
			x.podRest = append(x.podRest, i)
		} else {
			x.podIdx.add(i, s.pod)
		}
	}
	x.podRest = append(x.podRest, x.podIdx.rest...)
	slices.Sort(x.podRest)
	return x
}

// ns returns the Namespace's entry, computing it on first use.
func (x *index) ns(name string) *nsEntry {
	if e, ok := x.perNS[name]; ok {
		return e
	}
	e := &nsEntry{ok: slices.Clone(x.noNSSel)}
	if l, known := x.namespaces[name]; known {
		set := nsLabelSet(name, l)
		try := func(i int) {
			if !e.ok.has(i) && x.sels[i].ns.Matches(set) {
				e.ok.set(i)
			}
		}
		for _, i := range x.nsIdx.candidates(set, nil) {
			try(i)
		}
		for _, i := range x.nsIdx.rest {
			try(i)
		}
	}
	for _, i := range x.podRest {
		if e.ok.has(i) {
			e.podAny = append(e.podAny, i)
		}
	}
	x.perNS[name] = e
	return e
}

// match appends to dst the indices of the Egresses selecting p, ascending
// (that is, in precedence order).
func (x *index) match(p *PodInfo, dst []int) []int {
	e := x.ns(p.Namespace)
	set := labels.Set(p.Labels)
	for _, i := range e.podAny {
		if s := x.sels[i]; s.pod == nil || s.pod.Matches(set) {
			dst = append(dst, i)
		}
	}
	// Each Egress is filed under one key and a Pod has one value per key,
	// so candidates holds no duplicates, and none of podAny.
	x.scratch = x.podIdx.candidates(p.Labels, x.scratch[:0])
	for _, i := range x.scratch {
		if e.ok.has(i) && x.sels[i].pod.Matches(set) {
			dst = append(dst, i)
		}
	}
	slices.Sort(dst)
	return dst
}
