package cluster

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestAddressing(t *testing.T) {
	tests := []struct {
		i       int
		name    string
		ip, gw  string
		podCIDR string
	}{
		{1, "node-a", "192.0.2.11", "10.244.1.1", "10.244.1.0/24"},
		{3, "node-c", "192.0.2.13", "10.244.3.1", "10.244.3.0/24"},
		{26, "node-z", "192.0.2.36", "10.244.26.1", "10.244.26.0/24"},
		{27, "node-27", "192.0.2.37", "10.244.27.1", "10.244.27.0/24"},
	}
	for _, tt := range tests {
		if got := NodeName(tt.i); got != tt.name {
			t.Errorf("NodeName(%d) = %s, want %s", tt.i, got, tt.name)
		}
		if got := NodeIP(tt.i).String(); got != tt.ip {
			t.Errorf("NodeIP(%d) = %s, want %s", tt.i, got, tt.ip)
		}
		if got := PodGateway(tt.i).String(); got != tt.gw {
			t.Errorf("PodGateway(%d) = %s, want %s", tt.i, got, tt.gw)
		}
		if got := PodCIDR(tt.i).String(); got != tt.podCIDR {
			t.Errorf("PodCIDR(%d) = %s, want %s", tt.i, got, tt.podCIDR)
		}
	}
	if NodeIP(maxNodes).Compare(ExtIP(0)) >= 0 {
		t.Errorf("node %d's IP %s reaches the external servers' %s", maxNodes, NodeIP(maxNodes), ExtIP(0))
	}
	lan := netip.MustParsePrefix(LANPrefix)
	for _, a := range []netip.Addr{NodeIP(1), NodeIP(maxNodes), ExtIP(0), ExtIP(1), netip.MustParseAddr(ControlPlaneIP)} {
		if !lan.Contains(a) {
			t.Errorf("%s outside the lan %s", a, lan)
		}
	}
}

func TestHostGWRoutes(t *testing.T) {
	got := hostGWRoutes(2, 3)
	want := []Route{
		{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("192.0.2.11")},
		{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParseAddr("192.0.2.13")},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("hostGWRoutes(2,3) = %v, want %v", got, want)
	}
	if r := hostGWRoutes(1, 1); len(r) != 0 {
		t.Fatalf("a single node has routes: %v", r)
	}
}

func TestPrimaryConflist(t *testing.T) {
	var doc struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type      string `json:"type"`
			Bridge    string `json:"bridge"`
			IsGateway bool   `json:"isGateway"`
			IPMasq    bool   `json:"ipMasq"`
			IPAM      struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
				Ranges  [][]struct {
					Subnet  string `json:"subnet"`
					Gateway string `json:"gateway"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(primaryConflist(2, "/d/ipam", true)), &doc); err != nil {
		t.Fatalf("conflist is not JSON: %v", err)
	}
	if len(doc.Plugins) != 1 {
		t.Fatalf("want one plugin, got %d", len(doc.Plugins))
	}
	p := doc.Plugins[0]
	if p.Type != "bridge" || p.Bridge != "cni0" || !p.IsGateway || !p.IPMasq {
		t.Errorf("bridge entry = %+v", p)
	}
	if p.IPAM.Type != "host-local" || p.IPAM.DataDir != "/d/ipam" ||
		p.IPAM.Ranges[0][0].Subnet != "10.244.2.0/24" || p.IPAM.Ranges[0][0].Gateway != "10.244.2.1" {
		t.Errorf("ipam = %+v", p.IPAM)
	}
}

func TestMasqueradeModes(t *testing.T) {
	if strings.Contains(primaryConflist(1, "/d", false), `"ipMasq": true`) {
		t.Error("node mode still asks the bridge plugin to masquerade")
	}
	bridge := nodeNATRules(2, MasqueradeBridge)
	if len(bridge) != 1 || !slices.Contains(bridge[0], "ACCEPT") {
		t.Errorf("bridge mode rules = %v, want only the pod-to-pod ACCEPT", bridge)
	}
	node := nodeNATRules(2, MasqueradeNode)
	if len(node) != 2 || !slices.Contains(node[0], "ACCEPT") {
		t.Fatalf("node mode rules = %v", node)
	}
	want := "-s 10.244.2.0/24 ! -d 10.244.0.0/16"
	if got := strings.Join(node[1], " "); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "-j MASQUERADE") {
		t.Errorf("node masquerade rule = %q, want %q ... -j MASQUERADE", got, want)
	}
	if _, err := (Options{Masquerade: "calico"}).withDefaults("/r"); err == nil {
		t.Error("unknown masquerade mode accepted")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{}.withDefaults("/repo")
	if err != nil {
		t.Fatal(err)
	}
	if o.Nodes != 3 || o.ExtServers != 1 || o.Masquerade != MasqueradeBridge || o.HelperBinary != "/repo/bin/sluice-helperd" || o.SluicePlugin != "/repo/bin/sluice" {
		t.Errorf("defaults = %+v", o)
	}
	for _, bad := range []Options{{Nodes: -1}, {Nodes: maxNodes + 1}, {ExtServers: 3}} {
		if _, err := bad.withDefaults("/repo"); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestHelperArgsAndCNIArgs(t *testing.T) {
	p := nodePaths("/c", "node-b")
	args := defaultHelperArgs("node-b", "/c/kubeconfig", p)
	for _, want := range []string{"--node-name=node-b", "--kubeconfig=/c/kubeconfig", "--uplink=eth0",
		"--cni-socket=/c/node-b/run/cni.sock", "--gossip-key-file=/c/node-b/gossip.key"} {
		if !slices.Contains(args, want) {
			t.Errorf("helper args %v lack %s", args, want)
		}
	}
	ca := cniArgs("prod", "web-1", "0f1e-22")
	want := map[string]string{"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "web-1", "K8S_POD_UID": "0f1e-22"}
	for _, kv := range ca {
		if w, ok := want[kv[0]]; ok && w != kv[1] {
			t.Errorf("%s = %s, want %s", kv[0], kv[1], w)
		}
		delete(want, kv[0])
	}
	if len(want) != 0 {
		t.Errorf("CNI_ARGS lack %v", want)
	}
	if id := containerID("0f1e-22-aa"); strings.Contains(id, "-") || id != "0f1e22aa" {
		t.Errorf("containerID = %s", id)
	}
}

func TestRPFilterSysctls(t *testing.T) {
	s := rpFilterSysctls([]string{"eth0"}, true)
	for _, k := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter", "net/ipv4/conf/eth0/rp_filter"} {
		if s[k] != "1" {
			t.Errorf("%s = %q, want 1", k, s[k])
		}
	}
	if s["net/ipv4/ip_forward"] != "1" {
		t.Error("forwarding not enabled")
	}
	if _, ok := rpFilterSysctls(nil, false)["net/ipv4/ip_forward"]; ok {
		t.Error("pods must not get ip_forward")
	}
}
