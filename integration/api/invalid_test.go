package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

// invalid is one object the schema must refuse: the field path and the
// message the apiserver must name.
type invalid struct {
	name  string
	kind  string // Egress or ExternalIPPool
	spec  string // YAML of the spec, indented two spaces
	field string // field path that must lead the error, e.g. spec.egressIP
	msg   string // part of the message after the field path
}

// invalidObjects covers every validation rule of the CRDs (install/), plus
// a few neighbours.
var invalidObjects = []invalid{
	{"appliedTo missing", "Egress", `
  egressIP: 203.0.113.1`, "spec.appliedTo", "Required value"},
	{"neither egressIP nor externalIPPool", "Egress", `
  appliedTo:
    podSelector: {}`, "spec.egressIP", "at least one of egressIP or externalIPPool must be set"},
	{"malformed egressIP", "Egress", `
  appliedTo: {}
  egressIP: 203.0.113.300`, "spec.egressIP", "must be a valid IPv4 or IPv6 address"},
	{"egressIP with a prefix", "Egress", `
  appliedTo: {}
  egressIP: 203.0.113.1/32`, "spec.egressIP", "must be a valid IPv4 or IPv6 address"},
	{"externalIPPool not a name", "Egress", `
  appliedTo: {}
  externalIPPool: Not_A_Name`, "spec.externalIPPool", "should match"},
	{"unknown operator in podSelector", "Egress", `
  appliedTo:
    podSelector:
      matchExpressions:
      - {key: app, operator: Contains, values: [web]}
  egressIP: 203.0.113.1`, "spec.appliedTo.podSelector", "operator must be one of In, NotIn, Exists, DoesNotExist"},
	{"unknown operator in namespaceSelector", "Egress", `
  appliedTo:
    namespaceSelector:
      matchExpressions:
      - {key: env, operator: in, values: [prod]}
  egressIP: 203.0.113.1`, "spec.appliedTo.namespaceSelector", "operator must be one of In, NotIn, Exists, DoesNotExist"},
	{"In with no values", "Egress", `
  appliedTo:
    podSelector:
      matchExpressions:
      - {key: app, operator: In, values: []}
  egressIP: 203.0.113.1`, "spec.appliedTo.podSelector", "values must be non-empty for In and NotIn"},
	{"Exists with values", "Egress", `
  appliedTo:
    namespaceSelector:
      matchExpressions:
      - {key: env, operator: Exists, values: [prod]}
  egressIP: 203.0.113.1`, "spec.appliedTo.namespaceSelector", "empty for Exists and DoesNotExist"},
	{"unknown operator in nodeSelector", "ExternalIPPool", `
  ipRanges:
  - cidr: 198.51.100.0/28
  nodeSelector:
    matchExpressions:
    - {key: zone, operator: Gt, values: ["1"]}`, "spec.nodeSelector", "operator must be one of In, NotIn, Exists, DoesNotExist"},
	{"cidr and start/end", "ExternalIPPool", `
  ipRanges:
  - cidr: 198.51.100.0/28
    start: 198.51.100.20
    end: 198.51.100.30`, "spec.ipRanges[0]", "exactly one of cidr or start and end must be set"},
	{"neither cidr nor start/end", "ExternalIPPool", `
  ipRanges:
  - {}`, "spec.ipRanges[0]", "exactly one of cidr or start and end must be set"},
	{"start without end", "ExternalIPPool", `
  ipRanges:
  - start: 198.51.100.20`, "spec.ipRanges[0]", "exactly one of cidr or start and end must be set"},
	{"start after end", "ExternalIPPool", `
  ipRanges:
  - start: 198.51.100.30
    end: 198.51.100.20`, "spec.ipRanges[0].start", "start must not be greater than end"},
	{"start after end in a later octet", "ExternalIPPool", `
  ipRanges:
  - cidr: 192.0.2.0/24
  - start: 198.51.101.1
    end: 198.51.100.255`, "spec.ipRanges[1].start", "start must not be greater than end"},
	{"mixed families", "ExternalIPPool", `
  ipRanges:
  - start: 198.51.100.20
    end: 2001:db8::20`, "spec.ipRanges[0].end", "start and end must be of the same IP family"},
	{"malformed start", "ExternalIPPool", `
  ipRanges:
  - start: 198.51.100
    end: 198.51.100.20`, "spec.ipRanges[0].start", "must be a valid IPv4 or IPv6 address"},
	{"malformed end", "ExternalIPPool", `
  ipRanges:
  - start: 198.51.100.1
    end: 198.51.100.x`, "spec.ipRanges[0].end", "must be a valid IPv4 or IPv6 address"},
	{"malformed cidr", "ExternalIPPool", `
  ipRanges:
  - cidr: 198.51.100.0/33`, "spec.ipRanges[0].cidr", "must be a valid CIDR"},
	{"cidr without prefix", "ExternalIPPool", `
  ipRanges:
  - cidr: 198.51.100.0`, "spec.ipRanges[0].cidr", "must be a valid CIDR"},
	{"cidr with host bits", "ExternalIPPool", `
  ipRanges:
  - cidr: 198.51.100.5/28`, "spec.ipRanges[0].cidr", "must be a network address"},
	{"empty ipRanges", "ExternalIPPool", `
  ipRanges: []`, "spec.ipRanges", "should have at least 1 items"},
	{"ipRanges missing", "ExternalIPPool", `
  nodeSelector: {}`, "spec.ipRanges", "Required value"},
}

func TestInvalidObjectsRejected(t *testing.T) {
	needServer(t)
	if len(invalidObjects) < 12 {
		t.Fatalf("only %d invalid objects; at least 12 are wanted", len(invalidObjects))
	}
	cs := clientset(t)
	for i, tt := range invalidObjects {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("invalid-%d", i)
			doc := fmt.Sprintf("apiVersion: sluice.dev/v1alpha1\nkind: %s\nmetadata:\n  name: %s\nspec:%s\n", tt.kind, name, tt.spec)
			out, err := cp.KubectlInput(doc, "create", "-f", "-")
			if err == nil {
				t.Fatalf("accepted:\n%s\nkubectl: %s", doc, out)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q is invalid", name)) {
				t.Fatalf("not refused by validation: %v", err)
			}
			// The field path leads its error: "<field>: Invalid value: ..." or "<field>: Required value".
			if !strings.Contains(msg, tt.field+": ") {
				t.Errorf("error does not name field %s:\n%v", tt.field, err)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error lacks %q:\n%v", tt.msg, err)
			}
			if err := getErr(cs, tt.kind, name); !apierrors.IsNotFound(err) {
				t.Errorf("get %s %s after a refused create: %v, want NotFound", tt.kind, name, err)
			}
		})
	}
}

// getErr reads the object back through the typed clientset (cheaper than
// another kubectl run) and returns only the error.
func getErr(cs versioned.Interface, kind, name string) error {
	ctx := context.Background()
	var err error
	switch kind {
	case "Egress":
		_, err = cs.SluiceV1alpha1().Egresses().Get(ctx, name, metav1.GetOptions{})
	case "ExternalIPPool":
		_, err = cs.SluiceV1alpha1().ExternalIPPools().Get(ctx, name, metav1.GetOptions{})
	default:
		err = fmt.Errorf("unknown kind %s", kind)
	}
	return err
}
