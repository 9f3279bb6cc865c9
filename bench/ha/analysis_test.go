package habench

import (
	"net/netip"
	"testing"
	"time"
)

func TestAnalyze(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.211")
	node := netip.MustParseAddr("192.0.2.11")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	s := func(sent, done int, src netip.Addr) Sample { return Sample{Sent: at(sent), Done: at(done), Src: src} }
	none := netip.Addr{}
	for _, tc := range []struct {
		name           string
		samples        []Sample
		failStart, end int
		want           Trial
	}{
		{
			name: "in-flight answer does not count, first one sent after the call does",
			samples: []Sample{
				s(0, 5, ip), s(20, 25, ip),
				s(40, 45, ip),    // sent before the call returned (50)
				s(60, 210, none), // lost
				s(80, 90, node),  // wrong source
				s(300, 310, ip),  // first counted
				s(320, 330, ip),
			},
			failStart: 30, end: 50,
			want: Trial{Kind: "k", Failover: 280 * time.Millisecond, Recovered: true, MaxGap: 265 * time.Millisecond,
				Sent: 4, Lost: 1, Wrong: 1},
		},
		{
			name:      "no interruption at all",
			samples:   []Sample{s(0, 5, ip), s(20, 25, ip), s(40, 45, ip), s(60, 65, ip)},
			failStart: 30, end: 35,
			want: Trial{Kind: "k", Failover: 15 * time.Millisecond, Recovered: true, MaxGap: 20 * time.Millisecond, Sent: 2},
		},
		{
			name:      "never recovers: gap runs to the end of the trace",
			samples:   []Sample{s(0, 5, ip), s(40, 190, none), s(60, 210, none)},
			failStart: 30, end: 35,
			want: Trial{Kind: "k", MaxGap: 205 * time.Millisecond, Sent: 2, Lost: 2},
		},
		{
			name:      "answers out of order: the earliest answer wins",
			samples:   []Sample{s(100, 400, ip), s(120, 150, ip)},
			failStart: 0, end: 10,
			want: Trial{Kind: "k", Failover: 150 * time.Millisecond, Recovered: true, MaxGap: 250 * time.Millisecond, Sent: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Analyze("k", tc.samples, ip, at(tc.failStart), at(tc.end))
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestChangeCount(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur map[string]string
		want      int
	}{
		{"same", map[string]string{"a": "n1", "b": "n2"}, map[string]string{"a": "n1", "b": "n2"}, 0},
		{"moved", map[string]string{"a": "n1", "b": "n2"}, map[string]string{"a": "n3", "b": "n2"}, 1},
		{"appeared and vanished", map[string]string{"a": "n1"}, map[string]string{"b": "n1"}, 2},
		{"to empty", map[string]string{"a": "n1"}, map[string]string{"a": ""}, 1},
		{"nil", nil, nil, 0},
	} {
		if got := ChangeCount(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestCPUPercent(t *testing.T) {
	if got := CPUPercent(100, 150, 10*time.Second); got != 5 {
		t.Fatalf("50 ticks over 10 s: got %v%%, want 5%%", got)
	}
	if got := CPUPercent(100, 50, time.Second); got != 0 {
		t.Fatalf("counter went back (restart): got %v, want 0", got)
	}
	if got := CPUPercent(0, 10, 0); got != 0 {
		t.Fatalf("zero wall: got %v", got)
	}
}

func TestFailoverFigures(t *testing.T) {
	trials := []Trial{
		{Kind: "helper_kill", Failover: 100 * time.Millisecond, Recovered: true, Takeover: 2 * time.Second, TookOver: true,
			Fence: 3500 * time.Millisecond, Fenced: true},
		{Kind: "uplink_down", Failover: 1500 * time.Millisecond, Recovered: true, Takeover: time.Second, TookOver: true},
		{Kind: "uplink_down", Failover: 500 * time.Millisecond, Recovered: true},
		{Kind: "node_freeze", Recovered: false, Fence: 4200 * time.Millisecond, Fenced: true},
		{Kind: "node_halt", Failover: 900 * time.Millisecond, Recovered: true, Takeover: 900 * time.Millisecond, TookOver: true,
			Fence: 3000 * time.Millisecond, Fenced: true},
	}
	got := map[string]float64{}
	for _, f := range FailoverFigures(trials, "probe") {
		got[f.Name] = f.Value
		if f.Command != FailoverCommand || f.Unit != "s" {
			t.Errorf("%s: command %q unit %q", f.Name, f.Command, f.Unit)
		}
	}
	want := map[string]float64{
		// The headline is over the kinds that stop the datapath: the
		// helper kill's 0.1 s is not in it.
		"failover_median_s": 0.9, "failover_p99_s": 1.5, "failover_takeover_median_s": 1,
		"failover_node_halt_median_s":   0.9,
		"failover_helper_kill_median_s": 0.1, "failover_uplink_down_median_s": 0.5, "failover_uplink_down_p99_s": 1.5,
		"failover_node_freeze_median_s": 0, "stale_holder_fence_s": 4.2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestSoakFigures(t *testing.T) {
	figs := SoakFigures(SoakResult{Duration: time.Minute, Loss: 0.02, StatusChanges: 1, HolderChanges: 2, CPUPercent: 1.23456, RSSMiB: 40})
	if figs[0].Name != "soak_false_failovers" || figs[0].Value != 3 || figs[0].Target != "== 0" {
		t.Fatalf("false failovers figure %+v", figs[0])
	}
	if figs[1].Value != 1.235 || figs[2].Value != 40 {
		t.Fatalf("cpu/rss figures %+v %+v", figs[1], figs[2])
	}
}
