package iptbackend

import (
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// inNS runs Detect's commands inside a fresh test namespace, whose
// iptables (both backends) start empty.
func inNS(n *nstest.NS) Runner {
	return func(name string, args ...string) ([]byte, error) {
		return n.Cmd(name, args...).Output()
	}
}

func TestDetectKernel(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tc := range []struct {
		name  string
		setup [][]string
		want  Mode
	}{
		{"empty namespace", nil, NFT},
		{"a legacy rule", [][]string{{"iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"}}, Legacy},
		{"an nft rule", [][]string{{"iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"}}, NFT},
		{"kubelet hint in legacy beats more nft rules", [][]string{
			{"iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"},
			{"iptables-nft", "-A", "FORWARD", "-j", "ACCEPT"},
			{"iptables-nft", "-A", "INPUT", "-j", "ACCEPT"},
		}, Legacy},
		{"kubelet hint in nft beats more legacy rules", [][]string{
			{"iptables-nft", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"},
			{"iptables-legacy", "-A", "FORWARD", "-j", "ACCEPT"},
			{"iptables-legacy", "-A", "INPUT", "-j", "ACCEPT"},
		}, NFT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nstest.New(t, "iptb")
			for _, c := range tc.setup {
				n.MustRun(t, c[0], c[1:]...)
			}
			b, err := Detect(inNS(n))
			if err != nil {
				t.Fatal(err)
			}
			if b.Mode != tc.want {
				t.Errorf("Detect = %q (%s), want %q", b.Mode, b.Reason, tc.want)
			}
		})
	}
}
