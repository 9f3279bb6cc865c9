// Command sluice-demo is `make demo`: a three-Node cluster in network
// namespaces with a real kube-apiserver and etcd, Sluice installed on every
// Node, the two examples of Antrea's Egress documentation (package seed)
// applied with kubectl, the source IPs an external server sees, and a
// failover. It tears everything down and ends with a PASS or FAIL line.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/integration/seed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API's examples (integration/seed), their addresses mapped into the
// documentation range, because this demo may only use 192.0.2.0/24,
// 198.51.100.0/24 and 203.0.113.0/24: the pool 10.10.0.11-20 becomes
// 192.0.2.211-220, and the static IPs of "node-4" and "node-5" become
// node-a's and node-b's. Nothing else is changed.
var demoPool = strings.NewReplacer("10.10.0.11", "192.0.2.211", "10.10.0.20", "192.0.2.220")

func seedStatic(nodeA, nodeB string) string {
	return strings.NewReplacer("10.10.0.104", nodeA, "node-4", "node-a", "10.10.0.105", nodeB, "node-5", "node-b").Replace(seed.StaticPair)
}

type demo struct {
	out    io.Writer
	c      *cluster.Cluster
	failed []string
}

func (d *demo) step(format string, a ...any) { fmt.Fprintf(d.out, "\n==> "+format+"\n", a...) }
func (d *demo) say(format string, a ...any)  { fmt.Fprintf(d.out, "    "+format+"\n", a...) }
func (d *demo) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	d.failed = append(d.failed, msg)
	d.say("FAILED: %s", msg)
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil))) // no log spam
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demo{out: os.Stdout}
	start := time.Now()
	err := d.run(ctx)
	if err != nil {
		d.failed = append(d.failed, err.Error())
	}
	took := time.Since(start).Round(time.Second)
	if len(d.failed) > 0 {
		fmt.Fprintf(d.out, "\nFAIL: sluice demo (%s): %s\n", took, strings.Join(d.failed, "; "))
		os.Exit(1)
	}
	fmt.Fprintf(d.out, "\nPASS: sluice demo (%s): every Pod left with its expected egress IP, and the failover held\n", took)
}

func (d *demo) run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo needs root: it creates network namespaces")
	}
	d.step("Starting a 3-Node cluster in network namespaces (etcd, kube-apiserver, bridge CNI + sluice)")
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 3, Sluice: true})
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	d.c = c
	defer func() {
		d.step("Tearing down")
		if err := c.Close(); err != nil {
			d.fail("teardown: %v", err)
		} else {
			d.say("all namespaces and processes removed")
		}
	}()
	d.say("ready in %s: %s", c.Started.Round(100*time.Millisecond), nodeList(c))

	d.step("Installing Sluice: sluice-helperd on every Node (the plugin is already in each Node's conflist)")
	if err := c.StartHelpers(ctx, 30*time.Second); err != nil {
		return err
	}
	d.say("3 helpers up, gossiping")

	d.step("Creating Namespaces prod and staging, and Pods through the CNI chain")
	type podSpec struct{ node, ns, name, app string }
	var specs []podSpec
	for _, ns := range []string{"prod", "staging"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			return err
		}
		for _, n := range c.Nodes {
			specs = append(specs, podSpec{n.Name, ns, "web-" + strings.TrimPrefix(n.Name, "node-"), "web"})
		}
		specs = append(specs, podSpec{"node-c", ns, "batch-c", "batch"})
	}
	pods := map[string]*cluster.Pod{}
	for _, s := range specs {
		p, err := c.AddPod(ctx, s.node, s.ns, s.name, map[string]string{"app": s.app})
		if err != nil {
			return err
		}
		pods[p.String()] = p
	}
	d.say("%d Pods", len(pods))

	d.step("Applying the API's examples with kubectl (apiVersion sluice.dev/v1alpha1; addresses in 192.0.2.0/24)")
	if out, err := c.KubectlInput(demoPool.Replace(seed.HAPool)+"---\n"+seed.HAPair, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("kubectl apply HA example: %v: %s", err, out)
	} else {
		d.say("%s", indent(out))
	}
	time.Sleep(time.Second) // the static pair is younger: for app=web Pods the HA pair wins the overlap
	static := seedStatic(c.Node("node-a").IP.String(), c.Node("node-b").IP.String())
	if out, err := c.KubectlInput(static, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("kubectl apply static example: %v: %s", err, out)
	} else {
		d.say("%s", indent(out))
	}
	if err := d.waitAssigned(ctx, []string{"egress-prod-web", "egress-staging-web", "egress-prod", "egress-staging"}); err != nil {
		return err
	}

	d.step("kubectl get egress")
	d.kubectl("get", "egress")
	d.step("kubectl get eip")
	d.kubectl("get", "eip")

	d.step("Each Pod calls the external server (192.0.2.100), which answers with the source IP it saw")
	want := map[string]string{}
	for key, p := range pods {
		switch {
		case strings.HasPrefix(p.Name, "web"):
			want[key] = "egress-" + p.Namespace + "-web"
		default:
			want[key] = "egress-" + p.Namespace
		}
	}
	d.checkSources(ctx, pods, want)

	d.step("Failover: cutting the uplink of egress-prod-web's Node")
	d.failover(ctx, pods)

	d.step("kubectl get egress (all Nodes back)")
	d.kubectl("get", "egress")
	return nil
}

func nodeList(c *cluster.Cluster) string {
	var parts []string
	for _, n := range c.Nodes {
		parts = append(parts, fmt.Sprintf("%s %s", n.Name, n.IP))
	}
	return strings.Join(parts, ", ")
}

func indent(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

func (d *demo) kubectl(args ...string) {
	out, err := d.c.Kubectl(args...)
	if err != nil {
		d.fail("kubectl %s: %v", strings.Join(args, " "), err)
		return
	}
	d.say("%s", indent(out))
}

func (d *demo) egress(ctx context.Context, name string) (ip netip.Addr, node string, err error) {
	eg, err := d.c.SluiceClient().SluiceV1alpha1().Egresses().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ip, "", err
	}
	ip, _ = netip.ParseAddr(eg.Status.EgressIP)
	return ip, eg.Status.EgressNode, nil
}

func (d *demo) waitAssigned(ctx context.Context, names []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for {
			ip, node, err := d.egress(ctx, name)
			if err == nil && ip.IsValid() && node != "" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("egress %s got no IP and Node in 30s", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (d *demo) checkSources(ctx context.Context, pods map[string]*cluster.Pod, want map[string]string) {
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    POD\tNODE\tEGRESS\tEXPECTED\tSEEN\t")
	for _, key := range sortedKeys(pods) {
		p := pods[key]
		ip, _, err := d.egress(ctx, want[key])
		if err != nil {
			d.fail("egress %s: %v", want[key], err)
			continue
		}
		seen, ok := d.poll(ctx, p, ip, 10*time.Second)
		mark := "ok"
		if !ok {
			mark = "WRONG"
			d.fail("%s left as %s, want %s", key, seen, ip)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\t%s\n", key, p.Node.Name, want[key], ip, seen, mark)
	}
	tw.Flush()
}

// poll asks until the Pod is seen as want or timeout passes.
func (d *demo) poll(ctx context.Context, p *cluster.Pod, want netip.Addr, timeout time.Duration) (netip.Addr, bool) {
	deadline := time.Now().Add(timeout)
	var seen netip.Addr
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		got, err := d.c.Whoami(cctx, p)
		cancel()
		if err == nil {
			seen = got
			if got == want {
				return got, true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return seen, false
}

func (d *demo) failover(ctx context.Context, pods map[string]*cluster.Pod) {
	ip, owner, err := d.egress(ctx, "egress-prod-web")
	if err != nil {
		d.fail("egress-prod-web: %v", err)
		return
	}
	var probe *cluster.Pod
	for _, key := range sortedKeys(pods) {
		p := pods[key]
		if p.Namespace == "prod" && strings.HasPrefix(p.Name, "web") && p.Node.Name != owner {
			probe = p
			break
		}
	}
	d.say("egress-prod-web: %s on %s; probing from %s on %s every 20 ms", ip, owner, probe, probe.Node.Name)
	failedAt := time.Now()
	if err := d.c.UplinkDown(ctx, owner); err != nil {
		d.fail("uplink down: %v", err)
		return
	}
	_, ok := d.poll(ctx, probe, ip, 15*time.Second)
	took := time.Since(failedAt)
	if !ok {
		d.fail("no failover within 15s")
	} else {
		_, newOwner, _ := d.egress(ctx, "egress-prod-web")
		d.say("%s answered again as %s after %s (now held by %s)", probe, ip, took.Round(time.Millisecond), newOwner)
		d.step("kubectl get egress (while %s is cut off)", owner)
		d.kubectl("get", "egress")
		d.step("Reconnecting %s", owner)
	}
	if err := d.c.UplinkUp(ctx, owner); err != nil {
		d.fail("uplink up: %v", err)
	}
	if _, ok := d.poll(ctx, probe, ip, 15*time.Second); !ok {
		d.fail("after %s came back, %s no longer leaves as %s", owner, probe, ip)
	} else {
		d.say("%s is back; %s still leaves as %s", owner, probe, ip)
	}
}

func sortedKeys(m map[string]*cluster.Pod) []string {
	return slices.Sorted(maps.Keys(m))
}
