// Package egressbench measures the egress benchmarks on the namespace
// cluster of integration/cluster: convergence of a change to the external
// server, throughput through a remote egress Node, and the helper at
// 10,000 Pods and 1,000 Egresses. The tests skip unless SLUICE_BENCH=1 and
// record figures only when SLUICE_BENCH_RECORD=1.
package egressbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// setCounts parses `ipset list -t` output into set name → number of
// entries, keeping only sets whose name starts with prefix.
func setCounts(out, prefix string) (map[string]int, error) {
	counts := map[string]int{}
	name := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Name: "); ok {
			name = strings.TrimSpace(v)
			continue
		}
		v, ok := strings.CutPrefix(line, "Number of entries: ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("ipset %s entries %q: %w", name, v, err)
		}
		counts[name] = n
	}
	return counts, sc.Err()
}

// sum adds the values of m.
func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}

// countRules counts the rules (-A lines) of `iptables-save` output, all
// tables, and those in chains whose name starts with prefix.
func countRules(save, prefix string) (all, own int) {
	for _, line := range strings.Split(save, "\n") {
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		all++
		if strings.HasPrefix(rest, prefix) {
			own++
		}
	}
	return all, own
}

// iperfBits is the received rate of an `iperf3 -J` client run, in bit/s.
func iperfBits(out []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 json: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 reported no received bits")
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

// vmKiB is a "VmRSS:" style field of /proc/<pid>/status, in KiB.
func vmKiB(status, field string) (int, error) {
	for _, line := range strings.Split(status, "\n") {
		v, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: %q", field, line)
		}
		return strconv.Atoi(f[0])
	}
	return 0, fmt.Errorf("no %s in status", field)
}

// scaleEgressIP is the egress IP of Egress i at scale: 500 distinct
// documentation addresses (198.51.100.1-250, 203.0.113.1-250), each shared
// by every 500th Egress, since 1,000 distinct ones don't fit in the
// ranges tests may use.
func scaleEgressIP(i int) netip.Addr {
	k := i % 500
	if k < 250 {
		return netip.AddrFrom4([4]byte{198, 51, 100, byte(k + 1)})
	}
	return netip.AddrFrom4([4]byte{203, 0, 113, byte(k - 250 + 1)})
}

// scalePodIP is Pod i's IP at scale: 10.244.(10+i/250).(i%250+1).
func scalePodIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, byte(10 + i/250), byte(i%250 + 1)})
}

// snatRules counts the SNAT rules of Sluice's nat chain in `iptables-save
// -t nat` output.
func snatRules(save string) int {
	n := 0
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A SLUICE-POSTROUTING ") && strings.Contains(line, " -j SNAT ") {
			n++
		}
	}
	return n
}
