package api_test

import (
	"strings"
	"testing"
)

// The seed's three examples (egress-api-seed.txt), with only apiVersion
// changed from crd.antrea.io/v1alpha2 to sluice.dev/v1alpha1. The seed
// writes its ExternalIPPools as YAML list items ("- apiVersion: ..."), which
// kubectl cannot apply on their own; they are wrapped in a `kind: List`
// here, items unchanged. The 10.10.x addresses are the seed's: these are
// API objects only, never put on any interface.
const (
	// "A typical ExternalIPPool resource example": a start/end range and a cidr.
	seedTypicalPool = `apiVersion: v1
kind: List
items:
- apiVersion: sluice.dev/v1alpha1
  kind: ExternalIPPool
  metadata:
    name: prod-external-ip-pool
  spec:
    ipRanges:
    - start: 10.10.0.2
      end: 10.10.0.10
    - cidr: 10.10.1.0/28
    nodeSelector:
      matchLabels:
        network-role: egress-gateway
`
	// "Configuring High-Availability Egress": the pool and the two Egresses.
	seedHAPool = `apiVersion: v1
kind: List
items:
- apiVersion: sluice.dev/v1alpha1
  kind: ExternalIPPool
  metadata:
    name: external-ip-pool
  spec:
    ipRanges:
    - start: 10.10.0.11  # 10.10.0.11-10.10.0.20 can be used as Egress IPs
      end: 10.10.0.20
    nodeSelector: {}     # All Nodes can be Egress Nodes
`
	seedHAPair = `apiVersion: sluice.dev/v1alpha1
kind: Egress
metadata:
  name: egress-prod-web
spec:
  appliedTo:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: prod
    podSelector:
      matchLabels:
        app: web
  externalIPPool: external-ip-pool
---
apiVersion: sluice.dev/v1alpha1
kind: Egress
metadata:
  name: egress-staging-web
spec:
  appliedTo:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: staging
    podSelector:
      matchLabels:
        app: web
  externalIPPool: external-ip-pool
`
	// "Configuring static Egress".
	seedStaticPair = `apiVersion: sluice.dev/v1alpha1
kind: Egress
metadata:
  name: egress-prod
spec:
  appliedTo:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: prod
  egressIP: 10.10.0.104   # node-4's IP
---
apiVersion: sluice.dev/v1alpha1
kind: Egress
metadata:
  name: egress-staging
spec:
  appliedTo:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: staging
  egressIP: 10.10.0.105   # node-5's IP
`
)

func TestSeedExamplesAccepted(t *testing.T) {
	needServer(t)
	tests := []struct {
		name    string
		yaml    string
		created []string // kubectl's "<kind>/<name> created" lines
		check   [][2]string
	}{
		{"typical pool", seedTypicalPool,
			[]string{"externalippool.sluice.dev/prod-external-ip-pool created"},
			[][2]string{{"eip/prod-external-ip-pool", "{.spec.ipRanges[0].start}-{.spec.ipRanges[0].end},{.spec.ipRanges[1].cidr}"}}},
		{"HA pool", seedHAPool,
			[]string{"externalippool.sluice.dev/external-ip-pool created"}, nil},
		{"HA pair", seedHAPair,
			[]string{"egress.sluice.dev/egress-prod-web created", "egress.sluice.dev/egress-staging-web created"},
			[][2]string{{"egress/egress-staging-web", "{.spec.externalIPPool}"}}},
		{"static pair", seedStaticPair,
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
