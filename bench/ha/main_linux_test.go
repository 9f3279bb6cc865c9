package habench

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// Pool the benchmarks allocate from (nodeSelector {}: every Node is
// eligible), and the Egress shape of integration/e2e's pooledEgress.
const (
	poolName  = "bench-pool"
	poolStart = "192.0.2.211"
	poolEnd   = "192.0.2.220"
)

var web = map[string]string{"app": "web"}

func pooledEgress(name, ns string) *v1alpha1.Egress {
	return &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.EgressSpec{
		ExternalIPPool: poolName, AppliedTo: v1alpha1.AppliedTo{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: web}}}}
}

// webOnEveryNode creates Namespace prod, a Pod labelled app=web on every
// Node, and the pooled Egress egressName that selects them.
func webOnEveryNode(ctx context.Context, t *testing.T, c *cluster.Cluster) []*cluster.Pod {
	t.Helper()
	if err := c.CreateNamespace(ctx, "prod", nil); err != nil {
		t.Fatal(err)
	}
	var pods []*cluster.Pod
	for _, n := range c.Nodes {
		p, err := c.AddPod(ctx, n.Name, "prod", "web-"+n.Name, web)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, pooledEgress(egressName, "prod"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pods
}

// startCluster brings up three Nodes with helpers (given extra
// arguments) and the pool.
func startCluster(t *testing.T, helperArgs ...string) *cluster.Cluster {
	t.Helper()
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true, HelperArgs: helperArgs})
	if err := c.StartHelpers(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.ExternalIPPool{ObjectMeta: metav1.ObjectMeta{Name: poolName},
		Spec: v1alpha1.ExternalIPPoolSpec{IPRanges: []v1alpha1.IPRange{{Start: poolStart, End: poolEnd}}}}
	if _, err := c.SluiceClient().SluiceV1alpha1().ExternalIPPools().Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

// egressState is an Egress's IP, Node and whether IPAssigned is True.
type egressState struct {
	IP       netip.Addr
	Node     string
	Assigned bool
}

func getState(ctx context.Context, c *cluster.Cluster, name string) (egressState, error) {
	eg, err := c.SluiceClient().SluiceV1alpha1().Egresses().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return egressState{}, fmt.Errorf("get egress %s: %w", name, err)
	}
	return stateOf(eg), nil
}

func stateOf(eg *v1alpha1.Egress) egressState {
	s := egressState{Node: eg.Status.EgressNode}
	s.IP, _ = netip.ParseAddr(eg.Status.EgressIP)
	for _, cond := range eg.Status.Conditions {
		if cond.Type == v1alpha1.IPAssigned {
			s.Assigned = cond.Status == metav1.ConditionTrue
		}
	}
	return s
}

// inPool says whether a is one of the benchmark pool's addresses.
func inPool(a netip.Addr) bool {
	lo, hi := netip.MustParseAddr(poolStart), netip.MustParseAddr(poolEnd)
	return a.Compare(lo) >= 0 && a.Compare(hi) <= 0
}

// holders maps every pool address found on a Node's uplink to the sorted
// names of the Nodes holding it (Cluster.UplinkAddrs).
func holders(c *cluster.Cluster) (map[netip.Addr][]string, error) {
	all, err := c.UplinkAddrs()
	if err != nil {
		return nil, err
	}
	maps.DeleteFunc(all, func(ip netip.Addr, _ []string) bool { return !inPool(ip) })
	return all, nil
}

// settle waits until the Egress is assigned, exactly one Node holds its
// IP, that Node is status.egressNode, and none of it changed for
// `stable`. It returns the settled state, or an error after limit.
func settle(ctx context.Context, c *cluster.Cluster, name string, stable, limit time.Duration) (egressState, error) {
	deadline := time.Now().Add(limit)
	var last string
	var since time.Time
	for time.Now().Before(deadline) {
		s, err := getState(ctx, c, name)
		if err != nil {
			return s, err
		}
		h, err := holders(c)
		if err != nil {
			return s, err
		}
		who := h[s.IP]
		key := fmt.Sprintf("%v %s %v %v", s.IP, s.Node, s.Assigned, who)
		if key != last {
			last, since = key, time.Now()
		}
		ok := s.IP.IsValid() && s.Assigned && len(who) == 1 && who[0] == s.Node
		if ok && time.Since(since) >= stable {
			return s, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return egressState{}, fmt.Errorf("egress %s did not settle within %s: last %s", name, limit, last)
}

// helperStat reads a helper's utime+stime (clock ticks) and VmHWM (KiB).
func helperStat(pid int) (ticks uint64, hwmKiB uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the ')' that closes the command name: state is field 3,
	// utime 14 and stime 15 (1-based over the whole line).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(st2), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &hwmKiB)
		}
	}
	return ut + st, hwmKiB, nil
}
