package api_test

import (
	"strings"
	"testing"

	"github.com/sluicenet/sluice/integration/seed"
)

func TestSeedExamplesAccepted(t *testing.T) {
	needServer(t)
	tests := []struct {
		name    string
		yaml    string
		created []string // kubectl's "<kind>/<name> created" lines
		check   [][2]string
	}{
		{"typical pool", seed.TypicalPool,
			[]string{"externalippool.sluice.dev/prod-external-ip-pool created"},
			[][2]string{{"eip/prod-external-ip-pool", "{.spec.ipRanges[0].start}-{.spec.ipRanges[0].end},{.spec.ipRanges[1].cidr}"}}},
		{"HA pool", seed.HAPool,
			[]string{"externalippool.sluice.dev/external-ip-pool created"}, nil},
		{"HA pair", seed.HAPair,
			[]string{"egress.sluice.dev/egress-prod-web created", "egress.sluice.dev/egress-staging-web created"},
			[][2]string{{"egress/egress-staging-web", "{.spec.externalIPPool}"}}},
		{"static pair", seed.StaticPair,
			[]string{"egress.sluice.dev/egress-prod created", "egress.sluice.dev/egress-staging created"},
			[][2]string{{"egress/egress-prod", "{.spec.egressIP}"}}},
	}
	want := map[string]string{
		"eip/prod-external-ip-pool": "10.10.0.2-10.10.0.10,10.10.1.0/28",
		"egress/egress-staging-web": "external-ip-pool",
		"egress/egress-prod":        "10.10.0.104",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := cp.KubectlInput(tt.yaml, "apply", "-f", "-")
			if err != nil {
				t.Fatalf("seed example rejected: %v", err)
			}
			for _, line := range tt.created {
				if !strings.Contains(out, line) {
					t.Errorf("kubectl apply output lacks %q:\n%s", line, out)
				}
			}
			for _, c := range tt.check {
				got, err := cp.Kubectl("get", c[0], "-o", "jsonpath="+c[1])
				if err != nil {
					t.Fatal(err)
				}
				if got != want[c[0]] {
					t.Errorf("%s %s = %q, want %q", c[0], c[1], got, want[c[0]])
				}
			}
		})
	}
}
