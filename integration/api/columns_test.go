package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

func clientset(t *testing.T) *versioned.Clientset {
	t.Helper()
	cs, err := versioned.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// table runs `kubectl get <resource> <name>` and returns the header and the
// row, split on whitespace.
func table(t *testing.T, resource, name string) (header, row []string) {
	t.Helper()
	out, err := cp.Kubectl("get", resource, name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get %s %s printed %d lines, want 2:\n%s", resource, name, len(lines), out)
	}
	return strings.Fields(lines[0]), strings.Fields(lines[1])
}

// checkRow compares a row, ignoring the AGE column at index age.
func checkRow(t *testing.T, what string, row []string, age int, want []string) {
	t.Helper()
	if len(row) != len(want) {
		t.Fatalf("%s row = %q, want %q", what, row, want)
	}
	for i := range row {
		if i != age && row[i] != want[i] {
			t.Errorf("%s row = %q, want %q (AGE ignored)", what, row, want)
			return
		}
	}
}

func TestEgressPrinterColumns(t *testing.T) {
	needServer(t)
	ctx := context.Background()
	cs := clientset(t)
	eg := &v1alpha1.Egress{
		ObjectMeta: metav1.ObjectMeta{Name: "columns-egress"},
		Spec: v1alpha1.EgressSpec{
			AppliedTo: v1alpha1.AppliedTo{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			EgressIP:  "203.0.113.10",
		},
	}
	eg, err := cs.SluiceV1alpha1().Egresses().Create(ctx, eg, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.SluiceV1alpha1().Egresses().Delete(ctx, "columns-egress", metav1.DeleteOptions{}) })

	wantHeader := []string{"NAME", "EGRESSIP", "AGE", "NODE"}
	header, row := table(t, "egress", "columns-egress")
	if !slices.Equal(header, wantHeader) {
		t.Fatalf("kubectl get egress header = %q, want %q", header, wantHeader)
	}
	// kubectl prints an empty cell for an unset CRD column, so the row
	// holds only NAME and AGE until the status is set.
	checkRow(t, "before status", row, 1, []string{"columns-egress", "age"})

	eg.Status = v1alpha1.EgressStatus{EgressNode: "node-4", EgressIP: "203.0.113.10"}
	if _, err := cs.SluiceV1alpha1().Egresses().UpdateStatus(ctx, eg, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
	for _, res := range []string{"egress", "egresses", "eg"} {
		header, row := table(t, res, "columns-egress")
		if !slices.Equal(header, wantHeader) {
			t.Errorf("kubectl get %s header = %q, want %q", res, header, wantHeader)
		}
		checkRow(t, "kubectl get "+res, row, 2, []string{"columns-egress", "203.0.113.10", "age", "node-4"})
	}
}

func TestExternalIPPoolPrinterColumns(t *testing.T) {
	needServer(t)
	ctx := context.Background()
	cs := clientset(t)
	pool := &v1alpha1.ExternalIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "columns-pool"},
		Spec:       v1alpha1.ExternalIPPoolSpec{IPRanges: []v1alpha1.IPRange{{CIDR: "198.51.100.0/28"}}},
	}
	pool, err := cs.SluiceV1alpha1().ExternalIPPools().Create(ctx, pool, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.SluiceV1alpha1().ExternalIPPools().Delete(ctx, "columns-pool", metav1.DeleteOptions{}) })

	wantHeader := []string{"NAME", "TOTAL", "USED", "AGE"}
	header, _ := table(t, "eip", "columns-pool")
	if !slices.Equal(header, wantHeader) {
		t.Fatalf("kubectl get eip header = %q, want %q", header, wantHeader)
	}
	pool.Status.Usage = v1alpha1.IPPoolUsage{Total: 14, Used: 3}
	if _, err := cs.SluiceV1alpha1().ExternalIPPools().UpdateStatus(ctx, pool, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
	for _, res := range []string{"eip", "externalippool", "externalippools"} {
		header, row := table(t, res, "columns-pool")
		if !slices.Equal(header, wantHeader) {
			t.Errorf("kubectl get %s header = %q, want %q", res, header, wantHeader)
		}
		checkRow(t, "kubectl get "+res, row, 3, []string{"columns-pool", "14", "3", "age"})
	}
}
