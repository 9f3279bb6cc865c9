package alloc

import (
	"fmt"
	"testing"
	"time"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func pool(name string, allocs map[string]string, ranges ...v1alpha1.IPRange) *v1alpha1.ExternalIPPool {
	p := &v1alpha1.ExternalIPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ExternalIPPoolSpec{IPRanges: ranges}}
	for ip, eg := range allocs {
		p.Status.Allocations = append(p.Status.Allocations, v1alpha1.IPAllocation{IP: ip, Egress: eg})
	}
	return p
}

func egress(name string, age int, poolName, ip, allocatedFrom string) *v1alpha1.Egress {
	eg := &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name,
		CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))},
		Spec: v1alpha1.EgressSpec{ExternalIPPool: poolName, EgressIP: ip}}
	if allocatedFrom != "" {
		eg.Annotations = map[string]string{AllocatedFromAnnotation: allocatedFrom}
	}
	return eg
}

var r11to13 = v1alpha1.IPRange{Start: "192.0.2.11", End: "192.0.2.13"}

func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pool      *v1alpha1.ExternalIPPool
		egresses  []*v1alpha1.Egress
		wantAlloc map[string]string // ip → egress
		wantSet   map[string]string
		wantReas  map[string]string // egress → reason
		wantUsed  int64
	}{{
		name:      "pool only: lowest free IP, oldest Egress first",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("b", 2, "p", "", ""), egress("a", 1, "p", "", "")},
		wantAlloc: map[string]string{"192.0.2.11": "a", "192.0.2.12": "b"},
		wantSet:   map[string]string{"a": "192.0.2.11", "b": "192.0.2.12"},
		wantReas:  map[string]string{"a": "Allocated", "b": "Allocated"},
		wantUsed:  2,
	}, {
		name:      "user IP inside the pool is recorded and never handed to another",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "", ""), egress("u", 2, "p", "192.0.2.11", "")},
		wantAlloc: map[string]string{"192.0.2.11": "u", "192.0.2.12": "a"},
		wantSet:   map[string]string{"a": "192.0.2.12"},
		wantReas:  map[string]string{"a": "Allocated", "u": "Allocated"},
		wantUsed:  2,
	}, {
		name:      "user IP outside the pool: IPNotInPool",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("u", 1, "p", "198.51.100.9", "")},
		wantAlloc: map[string]string{},
		wantSet:   map[string]string{},
		wantReas:  map[string]string{"u": "IPNotInPool"},
	}, {
		name:      "exhausted: newest waits",
		pool:      pool("p", nil, v1alpha1.IPRange{CIDR: "192.0.2.0/31"}),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "", ""), egress("b", 2, "p", "", ""), egress("c", 3, "p", "", "")},
		wantAlloc: map[string]string{"192.0.2.0": "a", "192.0.2.1": "b"},
		wantSet:   map[string]string{"a": "192.0.2.0", "b": "192.0.2.1"},
		wantReas:  map[string]string{"a": "Allocated", "b": "Allocated", "c": "PoolExhausted"},
		wantUsed:  2,
	}, {
		name:      "existing records are kept; a deleted Egress's record is released",
		pool:      pool("p", map[string]string{"192.0.2.12": "a", "192.0.2.11": "gone"}, r11to13),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "192.0.2.12", "p"), egress("b", 2, "p", "", "")},
		wantAlloc: map[string]string{"192.0.2.12": "a", "192.0.2.11": "b"},
		wantSet:   map[string]string{"b": "192.0.2.11"},
		wantReas:  map[string]string{"a": "Allocated", "b": "Allocated"},
		wantUsed:  2,
	}, {
		name:      "record written but spec not yet: finish the write",
		pool:      pool("p", map[string]string{"192.0.2.13": "a"}, r11to13),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "", "")},
		wantAlloc: map[string]string{"192.0.2.13": "a"},
		wantSet:   map[string]string{"a": "192.0.2.13"},
		wantReas:  map[string]string{"a": "Allocated"},
		wantUsed:  1,
	}, {
		name:      "switched from another pool: reallocate here",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "203.0.113.5", "old")},
		wantAlloc: map[string]string{"192.0.2.11": "a"},
		wantSet:   map[string]string{"a": "192.0.2.11"},
		wantReas:  map[string]string{"a": "Allocated"},
		wantUsed:  1,
	}, {
		name:      "own IP whose record was lost is kept",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("a", 1, "p", "192.0.2.13", "p")},
		wantAlloc: map[string]string{"192.0.2.13": "a"},
		wantSet:   map[string]string{},
		wantReas:  map[string]string{"a": "Allocated"},
		wantUsed:  1,
	}, {
		name:      "two Egresses name the same IP: the older keeps it",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("b", 2, "p", "192.0.2.11", ""), egress("a", 1, "p", "192.0.2.11", "")},
		wantAlloc: map[string]string{"192.0.2.11": "a"},
		wantSet:   map[string]string{},
		wantReas:  map[string]string{"a": "Allocated", "b": ReasonIPInUse},
		wantUsed:  1,
	}, {
		name:      "Egresses of other pools are ignored",
		pool:      pool("p", nil, r11to13),
		egresses:  []*v1alpha1.Egress{egress("x", 1, "other", "", ""), egress("s", 1, "", "192.0.2.11", "")},
		wantAlloc: map[string]string{},
		wantSet:   map[string]string{},
		wantReas:  map[string]string{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Allocate(tc.pool, tc.egresses, World{})
			alloc := map[string]string{}
			for _, a := range got.Allocations {
				alloc[a.IP] = a.Egress
			}
			if fmt.Sprint(alloc) != fmt.Sprint(tc.wantAlloc) {
				t.Errorf("allocations = %v, want %v", alloc, tc.wantAlloc)
			}
			if fmt.Sprint(got.SetIP) != fmt.Sprint(tc.wantSet) {
				t.Errorf("SetIP = %v, want %v", got.SetIP, tc.wantSet)
			}
			reasons := map[string]string{}
			for eg, c := range got.Conditions {
				reasons[eg] = c.Reason
				if c.Allocated != (c.Reason == "Allocated") {
					t.Errorf("%s: Allocated=%v with reason %s", eg, c.Allocated, c.Reason)
				}
			}
			if fmt.Sprint(reasons) != fmt.Sprint(tc.wantReas) {
				t.Errorf("reasons = %v, want %v", reasons, tc.wantReas)
			}
			if got.Usage.Used != tc.wantUsed || got.Usage.Total != 3 && tc.pool.Spec.IPRanges[0] == r11to13 {
				t.Errorf("usage = %+v, want used %d of 3", got.Usage, tc.wantUsed)
			}
		})
	}
}

func TestPlanInvalidPool(t *testing.T) {
	got := Allocate(pool("p", nil, v1alpha1.IPRange{Start: "2001:db8::9", End: "2001:db8::1"}),
		[]*v1alpha1.Egress{egress("a", 1, "p", "", "")}, World{})
	if c := got.Conditions["a"]; c.Allocated || c.Reason != v1alpha1.ReasonInvalidPool {
		t.Fatalf("condition = %+v, want InvalidPool", c)
	}
}

func TestOrphans(t *testing.T) {
	setIP, conds := Orphans(map[string]bool{"p": true}, []*v1alpha1.Egress{
		egress("ours", 1, "gone", "192.0.2.11", "gone"),
		egress("users", 2, "gone", "192.0.2.12", ""),
		egress("fine", 3, "p", "", ""),
		egress("static", 4, "", "192.0.2.13", ""),
	})
	if fmt.Sprint(setIP) != "map[ours:]" {
		t.Errorf("setIP = %v, want only ours cleared", setIP)
	}
	if len(conds) != 2 || conds["ours"].Reason != v1alpha1.ReasonPoolNotFound || conds["users"].Reason != v1alpha1.ReasonPoolNotFound {
		t.Errorf("conds = %v", conds)
	}
}

// Never one IP twice, whatever the records and the order.
func TestPlanNeverDuplicates(t *testing.T) {
	var egs []*v1alpha1.Egress
	for i := range 40 {
		ip := ""
		if i%7 == 0 {
			ip = fmt.Sprintf("192.0.2.%d", 10+i%13)
		}
		egs = append(egs, egress(fmt.Sprintf("e%02d", i), i%5, "p", ip, ""))
	}
	p := pool("p", map[string]string{"192.0.2.10": "e03", "192.0.2.11": "e03", "192.0.2.12": "nope"},
		v1alpha1.IPRange{CIDR: "192.0.2.0/26"})
	got := Allocate(p, egs, World{})
	seenIP, seenEg := map[string]bool{}, map[string]bool{}
	for _, a := range got.Allocations {
		if seenIP[a.IP] || seenEg[a.Egress] {
			t.Fatalf("duplicate in %v", got.Allocations)
		}
		seenIP[a.IP], seenEg[a.Egress] = true, true
	}
}
