package config

import (
	"flag"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/datapath"
)

func parse(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c := Bind(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

func TestValidConfig(t *testing.T) {
	c, err := parse(t, "--node-name=n1", "--cluster-cidrs=10.244.0.0/16, 10.96.0.0/12", "--gossip-insecure")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Excluded()); got != 2 {
		t.Fatalf("Excluded() has %d prefixes, want 2", got)
	}
	if c.TunnelPort != datapath.DefaultTunnelPort || c.TunnelDev != datapath.DefaultTunnelDev {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestInvalidConfigNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--cluster-cidrs=10.244.0.0/16", "--gossip-insecure"}, "--node-name"},
		{[]string{"--node-name=n", "--gossip-insecure"}, "--cluster-cidrs"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16"}, "--gossip-key-file"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--tunnel-port=8472"}, "--tunnel-port"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--tunnel-port=4789"}, "--tunnel-port"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--tunnel-vni=0"}, "--tunnel-vni"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--tunnel-dev=a/b"}, "--tunnel-dev"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--spool-dir=rel"}, "--spool-dir"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--kube-api-qps=0"}, "--kube-api-qps"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--kube-api-burst=0"}, "--kube-api-burst"},
		{[]string{"--node-name=n", "--cluster-cidrs=10.244.0.0/16", "--gossip-insecure", "--v=loud"}, "--v"},
	} {
		_, err := parse(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.flag+":") {
			t.Errorf("%v: error %v does not name %s", tc.args, err, tc.flag)
		}
	}
}

func TestMalformedCIDRIsAParseError(t *testing.T) {
	if _, err := parse(t, "--cluster-cidrs=10.244.0.0/33"); err == nil || !strings.Contains(err.Error(), "cluster-cidrs") {
		t.Fatalf("got %v, want an error naming -cluster-cidrs", err)
	}
}
