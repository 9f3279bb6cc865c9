package gossip

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		NodeName:  "node1",
		BindAddr:  netip.MustParseAddr("192.0.2.1"),
		SecretKey: bytes.Repeat([]byte{7}, 32),
	}.WithDefaults()
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"defaults are valid", func(*Config) {}, ""},
		{"16-byte key", func(c *Config) { c.SecretKey = make([]byte, 16) }, ""},
		{"24-byte key", func(c *Config) { c.SecretKey = make([]byte, 24) }, ""},
		{"bad key length", func(c *Config) { c.SecretKey = make([]byte, 20) }, "SecretKey: 20 bytes"},
		{"no key refused", func(c *Config) { c.SecretKey = nil }, "refusing to gossip unencrypted"},
		{"no key allowed for tests", func(c *Config) { c.SecretKey, c.AllowInsecure = nil, true }, ""},
		{"no node name", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"no bind addr", func(c *Config) { c.BindAddr = netip.Addr{} }, "BindAddr"},
		{"unspecified bind addr", func(c *Config) { c.BindAddr = netip.IPv4Unspecified() }, "BindAddr"},
		{"port too big", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"timeout above interval", func(c *Config) { c.Tuning.ProbeTimeout = time.Second }, "Tuning.ProbeTimeout"},
		{"suspicion mult", func(c *Config) { c.Tuning.SuspicionMult = -1 }, "Tuning.SuspicionMult"},
		{"awareness", func(c *Config) { c.Tuning.AwarenessMaxMultiplier = -1 }, "Tuning.AwarenessMaxMultiplier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNoKeyIsErrNoKey(t *testing.T) {
	c := validConfig()
	c.SecretKey = nil
	if err := c.Validate(); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Validate() = %v, want ErrNoKey", err)
	}
}

func TestWithDefaultsKeepsSetFields(t *testing.T) {
	c := Config{BindPort: 1234, Tuning: Tuning{ProbeInterval: time.Second}}.WithDefaults()
	if c.BindPort != 1234 || c.Tuning.ProbeInterval != time.Second {
		t.Fatalf("set fields overwritten: %+v", c)
	}
	if c.Tuning.ProbeTimeout != DefaultTuning().ProbeTimeout {
		t.Fatalf("zero field not defaulted: %v", c.Tuning.ProbeTimeout)
	}
	if (Config{}).WithDefaults().BindPort != DefaultPort {
		t.Fatal("BindPort not defaulted")
	}
}

func TestMemberlistConfig(t *testing.T) {
	c := validConfig()
	mc, err := memberlistConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultTuning()
	if mc.Name != "node1" || mc.BindAddr != "192.0.2.1" || mc.AdvertiseAddr != "192.0.2.1" ||
		mc.BindPort != DefaultPort || mc.AdvertisePort != DefaultPort || mc.Label != clusterLabel {
		t.Fatalf("identity not mapped: %+v", mc)
	}
	if mc.ProbeInterval != d.ProbeInterval || mc.ProbeTimeout != d.ProbeTimeout ||
		mc.SuspicionMult != d.SuspicionMult || mc.GossipInterval != d.GossipInterval ||
		mc.RetransmitMult != d.RetransmitMult || mc.TCPTimeout != d.TCPTimeout ||
		mc.IndirectChecks != d.IndirectChecks || mc.DisableTcpPings {
		t.Fatalf("tuning not mapped: %+v", mc)
	}
	if mc.Keyring == nil || !bytes.Equal(mc.Keyring.GetPrimaryKey(), c.SecretKey) ||
		!mc.GossipVerifyIncoming || !mc.GossipVerifyOutgoing {
		t.Fatal("encryption not enforced")
	}
	c.SecretKey, c.AllowInsecure = nil, true
	if mc, err = memberlistConfig(c); err != nil || mc.Keyring != nil {
		t.Fatalf("insecure config: keyring %v, err %v", mc.Keyring, err)
	}
}

// TestDetectionBounds pins the table in the package doc.
func TestDetectionBounds(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		n    int
		want Detection
	}{
		{2, Detection{450 * ms, 450 * ms, 675 * ms, 749 * ms}},
		{3, Detection{450 * ms, 1800 * ms, 700 * ms, 870 * ms}},
		{5, Detection{450 * ms, 1800 * ms, 720 * ms, 1010 * ms}},
		{10, Detection{450 * ms, 1800 * ms, 735 * ms, 1141 * ms}},
		{20, Detection{585 * ms, 2340 * ms, 878 * ms, 1348 * ms}},
		{50, Detection{764 * ms, 3056 * ms, 1061 * ms, 1573 * ms}},
	}
	for _, tt := range tests {
		if got := DetectionBounds(DefaultTuning(), tt.n); got != tt.want {
			t.Errorf("n=%d: got %+v, want %+v", tt.n, got, tt.want)
		}
	}
	// memberlist's LAN defaults (Antrea's): on 3 members there are too few
	// peers for k = 2 confirmations, so the timer is the 4 s minimum; on 5
	// it starts at the 6× maximum and shrinks as confirmations arrive.
	lan := Tuning{ProbeInterval: time.Second, ProbeTimeout: 500 * ms, SuspicionMult: 4, SuspicionMaxTimeoutMult: 6}
	if got := DetectionBounds(lan, 3); got.Suspicion != 4*time.Second || got.MaxSuspicion != 4*time.Second {
		t.Errorf("LAN n=3 suspicion %+v, want 4s both", got)
	}
	if got := DetectionBounds(lan, 5).MaxSuspicion; got != 24*time.Second {
		t.Errorf("LAN n=5 starts its Lifeguard timer at %v, want 24s", got)
	}
}

func TestNormalizePeers(t *testing.T) {
	got, err := normalizePeers([]string{"192.0.2.2", "192.0.2.3:7000", "192.0.2.1:10351", "192.0.2.2"}, 10351, "192.0.2.1:10351")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.2:10351", "192.0.2.3:7000"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := normalizePeers([]string{"node2"}, 1, ""); err == nil {
		t.Fatal("hostname accepted, want error")
	}
}

func TestMissingPeers(t *testing.T) {
	got := missingPeers([]string{"b:1", "a:1", "c:1"}, map[string]bool{"c:1": true})
	if strings.Join(got, ",") != "a:1,b:1" {
		t.Fatalf("got %v", got)
	}
}

func TestSlogWriter(t *testing.T) {
	var buf bytes.Buffer
	w := &slogWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	_, _ = w.Write([]byte("2026/01/01 00:00:00 [WARN] memberlist: Refuting a suspect message (from: n2)\n"))
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), `msg="memberlist: Refuting`) {
		t.Fatalf("got %q", buf.String())
	}
}
