//go:build linux

package gossip

import (
	"bufio"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// soak is how long TestKernelLossNoFalseDeath runs under packet loss. The
// benchmark runs it for the 10 minutes:
//
//	go test -run TestKernelLossNoFalseDeath -timeout 15m ./pkg/gossip -args -gossip.soak=10m
var soak = flag.Duration("gossip.soak", 60*time.Second, "how long the packet-loss soak runs")

// lossProbability is the random drop rate on every member's uplink, in each
// direction (the soak: 2% on every uplink).
const lossProbability = "0.02"

// cluster is n member processes, each in its own namespace, on one bridge.
type cluster struct {
	t     *testing.T
	nodes []*nstest.NS
	ips   []string
	key   string
	procs []*child
}

type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	state string    // last STATE line
	log   []string  // memberlist log lines
	dead  []string  // STATE lines that had a dead member, with time
	at    time.Time // when state last changed
	done  chan struct{}
}

func newCluster(t *testing.T, n int) *cluster {
	sw := nstest.NewLAN(t, "gsw")
	c := &cluster{t: t, key: hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))}
	for i := range n {
		node := nstest.New(t, fmt.Sprintf("g%d", i))
		ip := fmt.Sprintf("192.0.2.%d", 11+i)
		sw.Plug(t, node, "eth0", ip+"/24")
		c.nodes = append(c.nodes, node)
		c.ips = append(c.ips, ip)
	}
	c.procs = make([]*child, n)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	return c
}

// addLoss drops lossProbability of packets in and out of every member's
// uplink, inside the member namespaces only.
func (c *cluster) addLoss() {
	for _, n := range c.nodes {
		n.MustRun(c.t, "iptables", "-w", "-A", "INPUT", "-i", "eth0", "-m", "statistic", "--mode", "random", "--probability", lossProbability, "-j", "DROP")
		n.MustRun(c.t, "iptables", "-w", "-A", "OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random", "--probability", lossProbability, "-j", "DROP")
	}
}

func (c *cluster) start(i int) {
	t := c.t
	cmd := c.nodes[i].Cmd(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envChild+"="+fmt.Sprintf("node%d", i),
		envBind+"="+c.ips[i],
		envPeers+"="+strings.Join(c.ips, ","),
		envKey+"="+c.key)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{name: fmt.Sprintf("node%d", i), cmd: cmd, stdin: stdin, done: make(chan struct{})}
	c.procs[i] = ch
	go ch.read(stdout)
	t.Cleanup(func() { ch.stop() })
}

func (ch *child) read(r io.Reader) {
	defer close(ch.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		ch.mu.Lock()
		switch {
		case strings.HasPrefix(line, "STATE "):
			ch.state = strings.TrimPrefix(line, "STATE ")
			ch.at = now
			if strings.Contains(ch.state, "=dead") {
				ch.dead = append(ch.dead, now.Format("15:04:05.000")+" "+ch.state)
			}
		case strings.HasPrefix(line, "LOG "):
			ch.log = append(ch.log, now.Format("15:04:05.000")+" "+line)
		}
		ch.mu.Unlock()
	}
	_ = ch.cmd.Wait()
}

// stop ends the child: closing stdin makes it shut down; nstest kills
// whatever is left when the namespace goes.
func (ch *child) stop() {
	_ = ch.stdin.Close()
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		_ = ch.cmd.Process.Kill()
		<-ch.done
	}
}

// dumpLogs logs every member's suspicion-related memberlist lines.
func (c *cluster) dumpLogs() {
	for _, p := range c.procs {
		if p == nil {
			continue
		}
		_, dead, logs := p.snapshot()
		for _, l := range logs {
			if strings.Contains(l, "uspect") || strings.Contains(l, "Marking") || strings.Contains(l, "TCP") {
				c.t.Logf("%s: %s", p.name, l)
			}
		}
		for _, d := range dead {
			c.t.Logf("%s: STATE %s", p.name, d)
		}
	}
}

// kill SIGKILLs the child, as a crashed helper.
func (ch *child) kill() {
	_ = ch.cmd.Process.Kill()
	<-ch.done
}

func (ch *child) snapshot() (state string, dead []string, logs []string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.state, append([]string(nil), ch.dead...), append([]string(nil), ch.log...)
}

func (c *cluster) allStates(want string) bool {
	for _, p := range c.procs {
		if p == nil {
			continue
		}
		if s, _, _ := p.snapshot(); s != want {
			return false
		}
	}
	return true
}

func fullState(n int, dead ...int) string {
	var parts []string
	for i := range n {
		s := "alive"
		for _, d := range dead {
			if d == i {
				s = "dead"
			}
		}
		parts = append(parts, fmt.Sprintf("node%d=%s", i, s))
	}
	return strings.Join(parts, " ")
}

// droppedPackets sums the packet counters of the statistic DROP rules in
// `iptables -L -v -n -x` output.
func droppedPackets(out string) int {
	total := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" && strings.Contains(line, "statistic") {
			var n int
			if _, err := fmt.Sscan(f[0], &n); err == nil {
				total += n
			}
		}
	}
	return total
}

func countLogs(logs []string, substr string) int {
	n := 0
	for _, l := range logs {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// TestKernelLossNoFalseDeath runs 3 members with 2% loss in and out of
// every uplink and asserts that no member is ever marked dead. Suspicions
// (refuted) are logged for the record.
//
// It skips under -race: the race detector makes each member process 5-10x
// slower, and on a shared 2-core box the resulting CPU stalls (not the
// loss) exceed the suspicion timeout, which is a false death by design (see
// the package doc). The soak measures the real, uninstrumented helper.
func TestKernelLossNoFalseDeath(t *testing.T) {
	nstest.RequireRoot(t)
	if raceEnabled {
		t.Skip("timing soak is meaningless under the race detector; run without -race")
	}
	const n = 3
	c := newCluster(t, n)
	c.addLoss()
	for i := range n {
		c.start(i)
	}
	waitFor(t, 20*time.Second, "membership under loss", func() bool { return c.allStates(fullState(n)) })
	// Dead states seen while joining (a member heard of before it
	// answered) do not count; only those after convergence do.
	base, logBase := make([]int, n), make([]int, n)
	for i, p := range c.procs {
		_, d, l := p.snapshot()
		base[i], logBase[i] = len(d), len(l)
	}
	t.Logf("converged; soaking for %v with %s loss per direction per uplink", *soak, lossProbability)
	end := time.Now().Add(*soak)
	for time.Now().Before(end) {
		time.Sleep(time.Second)
		for i, p := range c.procs {
			if _, d, _ := p.snapshot(); len(d) > base[i] {
				t.Fatalf("%s marked a member dead under loss: %v", p.name, d[base[i]:])
			}
		}
	}
	// Prove the loss was real: the DROP rules matched packets.
	for i, node := range c.nodes {
		out := node.MustRun(t, "iptables", "-w", "-L", "-v", "-n", "-x")
		drops := droppedPackets(out)
		t.Logf("node%d: loss rules dropped %d packets", i, drops)
		if drops == 0 {
			t.Errorf("node%d: no packet was dropped; the loss rules did not apply:\n%s", i, out)
		}
	}
	for i, p := range c.procs {
		_, _, logs := p.snapshot()
		logs = logs[logBase[i]:] // count only what happened during the soak
		t.Logf("%s: suspicions raised %d, refuted %d, marked failed %d", p.name,
			countLogs(logs, "Suspect node"), countLogs(logs, "Refuting a suspect"), countLogs(logs, "Marking "))
		if f := countLogs(logs, "Marking "); f != 0 {
			t.Errorf("%s: memberlist marked %d members failed", p.name, f)
		}
	}
}

// TestKernelKillDetection SIGKILLs a member a few times and measures how
// long the survivors take to mark it dead.
func TestKernelKillDetection(t *testing.T) {
	nstest.RequireRoot(t)
	const n, trials = 3, 5
	c := newCluster(t, n)
	for i := range n {
		c.start(i)
	}
	model := DetectionBounds(DefaultTuning(), n)
	var took []time.Duration
	for trial := range trials {
		waitFor(t, 20*time.Second, "full membership", func() bool { return c.allStates(fullState(n)) })
		victim := trial % n
		killed := time.Now()
		c.procs[victim].kill()
		victimName := c.procs[victim].name
		c.procs[victim] = nil
		// 3 s: the model's p99 is about 1 s; this leaves room for a busy box.
		waitFor(t, 3*time.Second, "survivors see the victim dead", func() bool { return c.allStates(fullState(n, victim)) })
		var last time.Time
		for _, p := range c.procs {
			if p == nil {
				continue
			}
			p.mu.Lock()
			if p.at.After(last) {
				last = p.at
			}
			p.mu.Unlock()
		}
		took = append(took, last.Sub(killed).Round(time.Millisecond))
		if os.Getenv("GOSSIP_DEBUG") != "" {
			t.Logf("killed %s at %s", victimName, killed.Format("15:04:05.000"))
			for _, p := range c.procs {
				if p != nil {
					_, _, l := p.snapshot()
					for _, x := range l {
						if strings.Contains(x, "uspect") || strings.Contains(x, "failed") {
							t.Logf("%s %s", p.name, x)
						}
					}
				}
			}
		}
		c.start(victim) // comes back; the background rejoin brings it in
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("detection after SIGKILL (all survivors), sorted: %v; median %v; model mean %v, p99 %v",
		took, took[len(took)/2], model.Mean, model.P99)
}
