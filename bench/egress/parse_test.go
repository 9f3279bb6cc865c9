package egressbench

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtMs(xs []float64) string { return fmt.Sprintf("%.0f", xs) }

func TestSetCounts(t *testing.T) {
	out := `Name: SLUICE-EXCEPT
Type: hash:net
Number of entries: 3
Name: SLUICE-EG-abc
Type: hash:ip
Header: family inet hashsize 1024 maxelem 65536
Number of entries: 10
Name: OTHER
Number of entries: 7
Name: SLUICE-EG-def
Number of entries: 0
`
	got, err := setCounts(out, "SLUICE-EG-")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["SLUICE-EG-abc"] != 10 || got["SLUICE-EG-def"] != 0 || sum(got) != 10 {
		t.Fatalf("setCounts = %v", got)
	}
	if _, err := setCounts("Name: SLUICE-EG-x\nNumber of entries: many\n", "SLUICE-EG-"); err == nil {
		t.Fatal("bad count accepted")
	}
}

func TestCountRules(t *testing.T) {
	save := "*mangle\n:SLUICE-PREROUTING - [0:0]\n-A PREROUTING -j SLUICE-PREROUTING\n-A SLUICE-PREROUTING -j MARK\nCOMMIT\n*nat\n-A SLUICE-POSTROUTING -j SNAT\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
	all, own := countRules(save, "SLUICE-")
	if all != 4 || own != 2 {
		t.Fatalf("countRules = %d, %d; want 4, 2", all, own)
	}
}

func TestIperfBits(t *testing.T) {
	got, err := iperfBits([]byte(`{"end":{"sum_sent":{"bits_per_second":2},"sum_received":{"bits_per_second":1.5e9}}}`))
	if err != nil || got != 1.5e9 {
		t.Fatalf("iperfBits = %v, %v", got, err)
	}
	if _, err := iperfBits([]byte(`{"error":"unable to connect"}`)); err == nil {
		t.Fatal("iperf3 error accepted")
	}
	if _, err := iperfBits([]byte(`{"end":{}}`)); err == nil {
		t.Fatal("zero rate accepted")
	}
}

func TestVmKiB(t *testing.T) {
	st := "Name:\tsluice-helperd\nVmHWM:\t  90112 kB\nVmRSS:\t   81234 kB\n"
	if v, err := vmKiB(st, "VmRSS"); err != nil || v != 81234 {
		t.Fatalf("VmRSS = %d, %v", v, err)
	}
	if v, err := vmKiB(st, "VmHWM"); err != nil || v != 90112 {
		t.Fatalf("VmHWM = %d, %v", v, err)
	}
	if _, err := vmKiB(st, "VmSwap"); err == nil {
		t.Fatal("missing field accepted")
	}
}

func TestScaleAddresses(t *testing.T) {
	ips := map[netip.Addr]bool{}
	for i := range 1000 {
		ip := scaleEgressIP(i)
		if !netip.MustParsePrefix("198.51.100.0/24").Contains(ip) && !netip.MustParsePrefix("203.0.113.0/24").Contains(ip) {
			t.Fatalf("egress IP %d = %s outside the documentation ranges", i, ip)
		}
		ips[ip] = true
	}
	if len(ips) != 500 {
		t.Fatalf("%d distinct egress IPs, want 500", len(ips))
	}
	pods := map[netip.Addr]bool{}
	for i := range 10000 {
		ip := scalePodIP(i)
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(ip) || ip.As4()[3] == 0 {
			t.Fatalf("pod IP %d = %s", i, ip)
		}
		pods[ip] = true
	}
	if len(pods) != 10000 {
		t.Fatalf("%d distinct pod IPs", len(pods))
	}
}

func TestSNATRules(t *testing.T) {
	save := "*nat\n-A POSTROUTING -j SLUICE-POSTROUTING\n-A SLUICE-POSTROUTING -o sluice.vxlan -j ACCEPT\n" +
		"-A SLUICE-POSTROUTING -o eth0 -m set --match-set SLUICE-EG-a src -j SNAT --to-source 198.51.100.1\n" +
		"-A SLUICE-POSTROUTING -o eth0 -m set --match-set SLUICE-EG-b src -j SNAT --to-source 198.51.100.2\nCOMMIT\n"
	if n := snatRules(save); n != 2 {
		t.Fatalf("snatRules = %d, want 2", n)
	}
}
