package attack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// Addresses of the isolation scenarios: a pool of three, two Egresses, so
// that of three Nodes one holds nothing.
var (
	IsoPoolStart = netip.MustParseAddr("192.0.2.231")
	IsoPoolEnd   = netip.MustParseAddr("192.0.2.233")
)

// Isolation is a cluster of three Nodes with two pooled Egresses placed on
// two of them, and a Pod of each Egress on every Node.
type Isolation struct {
	c       *cluster.Cluster
	Holders map[netip.Addr]string // egress IP → Node, as placed at the start
	Idle    string                // the Node that holds no IP
	pods    []isoPod
}

type isoPod struct {
	pod *cluster.Pod
	ip  netip.Addr // its Egress's IP
}

// IsolationResult is what the Nodes' kernels and the external server
// showed while one helper was cut off.
type IsolationResult struct {
	Node string
	// Claims are egress IPs the isolated Node added to its uplink while
	// another Node held them: split brain. Must be empty.
	Claims []netip.Addr
	// Kept is how long the isolated Node went on holding an IP it had
	// held before, at most (the time it took to see it had no quorum and
	// drop it); 0 when it held none.
	Kept time.Duration
	// Unheld is the longest any egress IP was held by no Node.
	Unheld time.Duration
	// Requests, Failed and WrongSource count the selected Pods' requests
	// to the external server during the isolation: Failed ones got no
	// answer, WrongSource ones arrived with another source than their
	// Egress's IP.
	Requests, Failed, WrongSource int
	Samples                       int // kernel samples taken
	// Timeline lists each change of holders, from the isolation's start.
	Timeline []string
}

func (r IsolationResult) String() string {
	return fmt.Sprintf("%s isolated: %d samples, claims %v, kept an old IP %v, an IP unheld %v at most, %d requests, %d failed, %d wrong source",
		r.Node, r.Samples, r.Claims, r.Kept.Round(10*time.Millisecond), r.Unheld.Round(10*time.Millisecond), r.Requests, r.Failed, r.WrongSource)
}

// SetupIsolation creates the pool, the Egresses and the Pods on a cluster
// of three Nodes whose helpers run, and waits until both Egresses are held
// and every Pod leaves with its Egress's IP.
func SetupIsolation(ctx context.Context, c *cluster.Cluster) (*Isolation, error) {
	if err := c.CreateNamespace(ctx, "iso", nil); err != nil {
		return nil, err
	}
	sl := c.SluiceClient().SluiceV1alpha1()
	p := &v1alpha1.ExternalIPPool{ObjectMeta: metav1.ObjectMeta{Name: "iso-pool"}, Spec: v1alpha1.ExternalIPPoolSpec{
		IPRanges: []v1alpha1.IPRange{{Start: IsoPoolStart.String(), End: IsoPoolEnd.String()}}}}
	if _, err := sl.ExternalIPPools().Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	names := []string{"iso-0", "iso-1"}
	for _, name := range names {
		eg := &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.EgressSpec{ExternalIPPool: "iso-pool",
			AppliedTo: v1alpha1.AppliedTo{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "iso"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}}
		if _, err := sl.Egresses().Create(ctx, eg, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	iso := &Isolation{c: c, Holders: map[netip.Addr]string{}}
	byName := map[string]netip.Addr{}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for {
			eg, err := sl.Egresses().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			if ip, err := netip.ParseAddr(eg.Status.EgressIP); err == nil && eg.Status.EgressNode != "" {
				iso.Holders[ip], byName[name] = eg.Status.EgressNode, ip
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("egress %s: not assigned after 30 s: %+v", name, eg.Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, n := range c.Nodes {
		if !slices.Contains(slices.Collect(maps.Values(iso.Holders)), n.Name) {
			iso.Idle = n.Name
		}
		for _, name := range names {
			pod, err := c.AddPod(ctx, n.Name, "iso", name+"-"+n.Name, map[string]string{"app": name})
			if err != nil {
				return nil, err
			}
			iso.pods = append(iso.pods, isoPod{pod, byName[name]})
		}
	}
	if iso.Idle == "" || len(iso.Holders) != 2 {
		return nil, fmt.Errorf("want two IPs on two Nodes, got %v", iso.Holders)
	}
	for _, p := range iso.pods {
		if err := waitSource(ctx, c, p.pod, p.ip); err != nil {
			return nil, err
		}
	}
	return iso, nil
}

// WrongKey restarts the helper of the Node that holds no IP with a gossip
// key no other Node has, for hold, then restarts it with the right one and
// waits until every IP is back on one Node. The old helper claimed every
// pool IP as soon as it came up alone.
func (iso *Isolation) WrongKey(ctx context.Context, hold time.Duration) (IsolationResult, error) {
	node := iso.Idle
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return IsolationResult{}, err
	}
	wrong := filepath.Join(iso.c.Dir, "wrong-gossip.key")
	if err := os.WriteFile(wrong, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		return IsolationResult{}, err
	}
	if err := iso.c.StopHelper(node); err != nil {
		return IsolationResult{}, err
	}
	res, err := iso.watch(ctx, node, hold, true, func() error {
		if err := iso.c.StartHelper(node, "--gossip-key-file="+wrong); err != nil {
			return err
		}
		return iso.c.WaitHelper(ctx, node, 20*time.Second)
	})
	if err != nil {
		return res, err
	}
	if err := iso.c.StopHelper(node); err != nil {
		return res, err
	}
	if err := iso.c.StartHelper(node); err != nil {
		return res, err
	}
	return res, iso.settle(ctx)
}

// Alone partitions a Node that holds an IP from the other two for hold,
// then heals the partition and waits until every IP is on one Node. Its
// peers take its IP over; it must drop the IP, and claim none of theirs.
func (iso *Isolation) Alone(ctx context.Context, hold time.Duration) (IsolationResult, error) {
	var node string
	for _, n := range iso.Holders {
		if node == "" || n < node {
			node = n
		}
	}
	var others []string
	for _, n := range iso.c.Nodes {
		if n.Name != node {
			others = append(others, n.Name)
		}
	}
	res, err := iso.watch(ctx, node, hold, false, func() error { return iso.c.Partition(ctx, []string{node}, others) })
	if herr := iso.c.Heal(ctx); herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return res, err
	}
	return res, iso.settle(ctx)
}

// watch starts sampling every Node's uplink, runs isolate, and samples
// for hold more. With traffic, every Pod also asks the external server
// its source, in turn, all along.
func (iso *Isolation) watch(ctx context.Context, node string, hold time.Duration, traffic bool, isolate func() error) (IsolationResult, error) {
	res := IsolationResult{Node: node}
	before, err := iso.held()
	if err != nil {
		return res, err
	}
	var stopTraffic func() Traffic
	if traffic {
		stopTraffic = iso.traffic(ctx)
	}
	claims := map[netip.Addr]bool{}
	unheldSince := map[netip.Addr]time.Time{}
	start := time.Now()
	last := ""
	sample := func() error {
		now, err := iso.held()
		if err != nil {
			return err
		}
		res.Samples++
		t := time.Now()
		if line := fmt.Sprint(now); line != last {
			res.Timeline = append(res.Timeline, fmt.Sprintf("%v %s", t.Sub(start).Round(time.Millisecond), line))
			last = line
		}
		for ip := range iso.Holders {
			h := now[ip]
			mine := slices.Contains(h, node)
			if mine && len(h) > 1 && !slices.Contains(before[ip], node) {
				claims[ip] = true
			}
			if mine && slices.Contains(before[ip], node) {
				res.Kept = max(res.Kept, t.Sub(start))
			}
			if len(h) == 0 {
				if _, ok := unheldSince[ip]; !ok {
					unheldSince[ip] = t
				}
				res.Unheld = max(res.Unheld, t.Sub(unheldSince[ip]))
			} else {
				delete(unheldSince, ip)
			}
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- isolate() }()
	var isoErr error
	isolated := false
	var end time.Time
	for end.IsZero() || time.Now().Before(end) {
		if err := sample(); err != nil {
			isoErr = err
			break
		}
		if !isolated {
			select {
			case isoErr = <-done:
				isolated, end = true, time.Now().Add(hold)
			default:
			}
			if isoErr != nil {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if stopTraffic != nil {
		tr := stopTraffic()
		res.Requests, res.Failed, res.WrongSource = tr.Requests, tr.Failed, tr.WrongSource
	}
	for ip := range claims {
		res.Claims = append(res.Claims, ip)
	}
	slices.SortFunc(res.Claims, netip.Addr.Compare)
	return res, isoErr
}

// Traffic counts the selected Pods' requests to the external server.
type Traffic struct {
	Requests    int
	Failed      int // no answer within 2 s
	WrongSource int // answered, but the server saw another source than the Egress's IP
}

// traffic has every Pod ask the external server its source, in turn,
// until the returned function is called; that returns the counts.
func (iso *Isolation) traffic(ctx context.Context) func() Traffic {
	stop := make(chan struct{})
	done := make(chan Traffic)
	go func() {
		var tr Traffic
		defer func() { done <- tr }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := iso.pods[i%len(iso.pods)]
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			got, err := iso.c.Whoami(rctx, p.pod)
			cancel()
			tr.Requests++
			switch {
			case err != nil:
				tr.Failed++
			case got != p.ip:
				tr.WrongSource++
			}
		}
	}()
	return func() Traffic { close(stop); return <-done }
}

// held maps each of the scenario's egress IPs to the Nodes that have it on
// their uplink.
func (iso *Isolation) held() (map[netip.Addr][]string, error) {
	out := map[netip.Addr][]string{}
	for _, n := range iso.c.Nodes {
		addrs, err := n.Exec(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil {
			return nil, err
		}
		for ip := range iso.Holders {
			if strings.Contains(addrs, " "+ip.String()+"/") {
				out[ip] = append(out[ip], n.Name)
			}
		}
	}
	return out, nil
}

// settle waits until every IP is on exactly one Node and every Pod leaves
// with its Egress's IP again.
func (iso *Isolation) settle(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := iso.held()
		if err != nil {
			return err
		}
		ok := true
		for ip := range iso.Holders {
			ok = ok && len(h[ip]) == 1
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after the isolation the IPs are held by %v", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range iso.pods {
		if err := waitSource(ctx, iso.c, p.pod, p.ip); err != nil {
			return err
		}
	}
	// Every helper sees all three again, with quorum.
	for _, n := range iso.c.Nodes {
		for {
			body, err := Scrape(ctx, n)
			if err == nil && strings.Contains(body, `sluice_quorum{value="alive"} 3`) && strings.Contains(body, `sluice_quorum{value="ok"} 1`) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after the isolation %s does not see all three Nodes with quorum: %v", n.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// Scrape reads a helper's /metrics from inside its Node's namespace.
func Scrape(ctx context.Context, n *cluster.Node) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := n.NS.Do(func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(n.IP.String(), "9779")+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
