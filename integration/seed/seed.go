// Package seed holds the Egress and ExternalIPPool examples of Antrea's
// Egress documentation (docs/egress.md in github.com/antrea-io/antrea),
// whose API Sluice's follows, as YAML, for the API tests that apply them
// and for the demo, which maps their addresses into the documentation
// ranges.
package seed

// The document's three examples, with only apiVersion changed from
// crd.antrea.io/v1alpha2 to sluice.dev/v1alpha1. It writes its
// ExternalIPPools as YAML list items ("- apiVersion: ..."), which kubectl
// cannot apply on their own; they are wrapped in a `kind: List` here, items
// unchanged. The 10.10.x addresses are the document's: these are API
// objects only, never put on any interface.
const (
	// "A typical ExternalIPPool resource example": a start/end range and a cidr.
	TypicalPool = `apiVersion: v1
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
	HAPool = `apiVersion: v1
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
	HAPair = `apiVersion: sluice.dev/v1alpha1
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
	StaticPair = `apiVersion: sluice.dev/v1alpha1
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
