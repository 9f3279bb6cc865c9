package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Chains the fault injectors own inside Node namespaces. They carry a
// TESTCL- prefix so they can never be mistaken for Sluice's SLUICE-*
// objects, and they hang off the raw and mangle tables, ahead of anything
// Sluice or the primary CNI installs in nat/filter.
const (
	partitionChain = "TESTCL-PARTITION"
	lossInChain    = "TESTCL-LOSS-IN"
	lossOutChain   = "TESTCL-LOSS-OUT"
)

// FreezeNode stops (SIGSTOP) every process inside the Node namespace, as a
// hung host would look to its peers: its helper neither gossips nor
// answers, but its kernel still forwards.
func (c *Cluster) FreezeNode(node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("freeze: no node %q", node)
	}
	pids, err := n.pids()
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			errs = append(errs, fmt.Errorf("stop pid %d: %w", pid, err))
			continue
		}
		n.frozen = append(n.frozen, pid)
	}
	// SIGSTOP is delivered asynchronously; return only once every process
	// is actually stopped, so the caller's clock starts at a real freeze.
	for _, pid := range n.frozen {
		for i := 0; i < 200 && procState(pid) != 'T' && procState(pid) != 0; i++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// procState is the state letter in /proc/<pid>/stat (R, S, T, Z ...), 0
// when the process is gone.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name before the state is in parentheses and may hold
	// spaces, so look after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// ThawNode resumes (SIGCONT) what FreezeNode stopped.
func (c *Cluster) ThawNode(node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("thaw: no node %q", node)
	}
	n.mu.Lock()
	pids := n.frozen
	n.frozen = nil
	n.mu.Unlock()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT) // a process that died meanwhile is fine
	}
	return nil
}

// haltTable is the nftables table HaltNode puts in a Node namespace.
const haltTable = "testcl_halt"

// HaltNode makes the Node look dead to the LAN while its link stays up, as
// a kernel that hung or lost power would: every process in it is frozen
// (FreezeNode) and a netdev table drops every frame, ARP included, in and
// out of its uplink. Its kernel neither forwards nor answers ARP for its
// egress IPs, so the restart grace's probe finds nobody.
func (c *Cluster) HaltNode(ctx context.Context, node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("halt: no node %q", node)
	}
	script := fmt.Sprintf("table netdev %[1]s {\n"+
		" chain in { type filter hook ingress device %[2]s priority -500; policy drop; }\n"+
		" chain out { type filter hook egress device %[2]s priority -500; policy drop; }\n}\n", haltTable, defaultUplink)
	cmd := n.NS.Cmd("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("halt %s: nft: %w: %s", node, err, out)
	}
	return c.FreezeNode(node)
}

// ResumeNode undoes HaltNode: the frames flow again, then the processes
// run on.
func (c *Cluster) ResumeNode(ctx context.Context, node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("resume: no node %q", node)
	}
	_, err := n.Exec(ctx, "nft", "delete", "table", "netdev", haltTable)
	return errors.Join(err, c.ThawNode(node))
}

// UplinkDown sets the Node's uplink down (its egress IPs become
// unreachable, as on a cable pull).
func (c *Cluster) UplinkDown(ctx context.Context, node string) error {
	_, err := c.Exec(ctx, node, "ip", "link", "set", defaultUplink, "down")
	return err
}

// UplinkUp sets the Node's uplink up again. The kernel drops the routes
// through a downed link, so the host-gw routes are put back too.
func (c *Cluster) UplinkUp(ctx context.Context, node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("uplink up: no node %q", node)
	}
	if _, err := n.Exec(ctx, "ip", "link", "set", defaultUplink, "up"); err != nil {
		return err
	}
	var cmds []string
	for _, r := range hostGWRoutes(n.Index, len(c.Nodes)) {
		cmds = append(cmds, fmt.Sprintf("route replace %s via %s dev %s", r.Dst, r.Via, defaultUplink))
	}
	return runBatch(n.NS, cmds)
}

// Partition cuts every Node of groupA off from every Node of groupB, both
// ways, while both keep reaching the control plane and the external
// servers. Each side drops, in raw PREROUTING, what arrives from the other
// side's Node IP or Pod CIDR; that covers gossip, the tunnel (outer source
// is the Node IP) and host-gw Pod traffic. Partitions add up; Heal removes
// them all.
func (c *Cluster) Partition(ctx context.Context, groupA, groupB []string) error {
	var rules []partitionRule
	for _, a := range groupA {
		for _, b := range groupB {
			na, nb := c.Node(a), c.Node(b)
			if na == nil || nb == nil {
				return fmt.Errorf("partition: unknown node in %v / %v", groupA, groupB)
			}
			rules = append(rules, partitionRules(na, nb)...)
			rules = append(rules, partitionRules(nb, na)...)
		}
	}
	for _, r := range rules {
		if err := c.ensureJump(ctx, r.node, "raw", "PREROUTING", partitionChain); err != nil {
			return err
		}
		if _, err := r.node.Exec(ctx, "iptables", append([]string{"-w", "-t", "raw", "-A", partitionChain}, r.args...)...); err != nil {
			return err
		}
	}
	return nil
}

// partitionRule is one DROP rule in a Node's partition chain.
type partitionRule struct {
	node *Node
	args []string
}

// partitionRules are the rules on `at` that drop what comes from `from`.
func partitionRules(at, from *Node) []partitionRule {
	return []partitionRule{
		{at, []string{"-s", from.IP.String(), "-j", "DROP"}},
		{at, []string{"-s", from.PodCIDR.String(), "-j", "DROP"}},
	}
}

// Heal removes every partition.
func (c *Cluster) Heal(ctx context.Context) error {
	var errs []error
	for _, n := range c.Nodes {
		if _, err := n.Exec(ctx, "iptables", "-w", "-t", "raw", "-F", partitionChain); err != nil && !isNoChain(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Loss drops packets on the Node's uplink at random, in both directions,
// with the given probability (iptables statistic: the kernel here has no
// netem). Probability 0 removes the loss.
func (c *Cluster) Loss(ctx context.Context, node string, probability float64) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("loss: no node %q", node)
	}
	if probability < 0 || probability > 1 {
		return fmt.Errorf("loss: probability %v outside [0,1]", probability)
	}
	if err := c.ensureJump(ctx, n, "raw", "PREROUTING", lossInChain); err != nil {
		return err
	}
	if err := c.ensureJump(ctx, n, "mangle", "POSTROUTING", lossOutChain); err != nil {
		return err
	}
	for _, t := range []struct{ table, chain, dir string }{{"raw", lossInChain, "-i"}, {"mangle", lossOutChain, "-o"}} {
		if _, err := n.Exec(ctx, "iptables", "-w", "-t", t.table, "-F", t.chain); err != nil {
			return err
		}
		if probability == 0 {
			continue
		}
		p := strconv.FormatFloat(probability, 'f', -1, 64)
		if _, err := n.Exec(ctx, "iptables", "-w", "-t", t.table, "-A", t.chain, t.dir, defaultUplink,
			"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// ensureJump creates chain in table on the Node and jumps to it first from
// the built-in chain, once.
func (c *Cluster) ensureJump(ctx context.Context, n *Node, table, builtin, chain string) error {
	if _, err := n.Exec(ctx, "iptables", "-w", "-t", table, "-N", chain); err != nil && !isChainExists(err) {
		return err
	}
	if _, err := n.Exec(ctx, "iptables", "-w", "-t", table, "-C", builtin, "-j", chain); err == nil {
		return nil
	}
	_, err := n.Exec(ctx, "iptables", "-w", "-t", table, "-I", builtin, "1", "-j", chain)
	return err
}

// iptables reports these conditions only in its message.
func isChainExists(err error) bool { return strings.Contains(err.Error(), "Chain already exists") }
func isNoChain(err error) bool {
	return strings.Contains(err.Error(), "No chain/target/match by that name")
}
