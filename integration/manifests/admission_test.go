package manifests_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

// The helper's ServiceAccount, impersonated against a real apiserver with
// install/'s CRDs, RBAC and admission policy: it may allocate (write
// spec.egressIP and the allocated-from annotation), and nothing else that
// its RBAC update right would allow.
func TestHelperMayOnlyAllocate(t *testing.T) {
	cp := startServer(t)
	for _, f := range []string{"crds/sluice.dev_egresses.yaml", "crds/sluice.dev_externalippools.yaml", "rbac.yaml", "admission.yaml"} {
		if out, err := cp.Kubectl("apply", "--server-side", "-f", filepath.Join(repoRoot(t), "install", f)); err != nil {
			t.Fatalf("apply %s: %v\n%s", f, err, out)
		}
	}
	if out, err := cp.Kubectl("wait", "--for=condition=Established", "crd/egresses.sluice.dev", "--timeout=30s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ctx := context.Background()
	admin, err := versioned.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	as := rest.CopyConfig(cp.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:sluice-system:sluice-helperd",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:sluice-system", "system:authenticated"}}
	helper, err := versioned.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	for _, eg := range []*v1alpha1.Egress{
		{ObjectMeta: metav1.ObjectMeta{Name: "pooled", Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "x"}},
			Spec: v1alpha1.EgressSpec{ExternalIPPool: "pool", AppliedTo: v1alpha1.AppliedTo{PodSelector: sel}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "static"},
			Spec: v1alpha1.EgressSpec{EgressIP: "192.0.2.50", AppliedTo: v1alpha1.AppliedTo{PodSelector: sel}}},
	} {
		if _, err := admin.SluiceV1alpha1().Egresses().Create(ctx, eg, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update := func(name string, change func(*v1alpha1.Egress)) error {
		eg, err := admin.SluiceV1alpha1().Egresses().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		change(eg)
		_, err = helper.SluiceV1alpha1().Egresses().Update(ctx, eg, metav1.UpdateOptions{})
		return err
	}
	denied := func(what, name, want string, change func(*v1alpha1.Egress)) {
		t.Helper()
		// The policy takes effect a moment after it is created.
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := update(name, change)
			if err != nil && strings.Contains(err.Error(), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v, want denied with %q", what, err, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	denied("change appliedTo", "pooled", "may not change spec.appliedTo", func(eg *v1alpha1.Egress) {
		eg.Spec.AppliedTo.PodSelector = &metav1.LabelSelector{}
	})
	denied("change the pool", "pooled", "may not change spec.externalIPPool", func(eg *v1alpha1.Egress) { eg.Spec.ExternalIPPool = "other" })
	denied("relabel", "pooled", "labels", func(eg *v1alpha1.Egress) { eg.Labels["team"] = "b" })
	denied("change another annotation", "pooled", "only the sluice.dev/allocated-from annotation", func(eg *v1alpha1.Egress) { eg.Annotations["note"] = "y" })
	denied("move a static Egress's IP", "static", "only when it is empty or Sluice allocated it", func(eg *v1alpha1.Egress) {
		eg.Spec.EgressIP = "192.0.2.51"
	})
	// What the allocator does is allowed: allocate, then replace its own.
	for _, ip := range []string{"192.0.2.60", "192.0.2.61", ""} {
		if err := update("pooled", func(eg *v1alpha1.Egress) {
			eg.Spec.EgressIP = ip
			if ip == "" {
				delete(eg.Annotations, "sluice.dev/allocated-from")
			} else {
				eg.Annotations["sluice.dev/allocated-from"] = "pool"
			}
		}); err != nil {
			t.Fatalf("allocate %q: %v", ip, err)
		}
	}
}
