package manifests_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluicenet/sluice/integration/controlplane"
)

// objects are what install/ holds, as kubectl names them in its output.
var objects = []string{
	"namespace/sluice-system",
	"customresourcedefinition.apiextensions.k8s.io/egresses.sluice.dev",
	"customresourcedefinition.apiextensions.k8s.io/externalippools.sluice.dev",
	"serviceaccount/sluice-helperd",
	"clusterrole.rbac.authorization.k8s.io/sluice-helperd",
	"clusterrolebinding.rbac.authorization.k8s.io/sluice-helperd",
	"validatingadmissionpolicy.admissionregistration.k8s.io/sluice-helperd-egress-writes",
	"validatingadmissionpolicybinding.admissionregistration.k8s.io/sluice-helperd-egress-writes",
	"configmap/sluice-config",
	"daemonset.apps/sluice-helperd",
}

// One control plane for the package's server tests: starting one costs
// seconds (minutes on a cold build cache).
func startServer(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cp := controlplane.StartForTest(t)
	// Namespaced objects cannot be dry-run into a namespace that a dry
	// run only pretends to create, so the Namespace is created for real.
	if out, err := cp.Kubectl("apply", "--server-side", "-f", filepath.Join(repoRoot(t), "install", "namespace.yaml")); err != nil {
		t.Fatalf("create namespace: %v\n%s", err, out)
	}
	return cp
}

// dryRun applies a kustomization with server-side dry-run; kubectl's
// default --validate=strict makes the server reject unknown fields too.
func dryRun(cp *controlplane.ControlPlane, dir string) (string, error) {
	return cp.Kubectl("apply", "--server-side", "--dry-run=server", "-k", dir)
}

func TestServerSideDryRun(t *testing.T) {
	cp := startServer(t)
	root := repoRoot(t)
	out, err := dryRun(cp, filepath.Join(root, "install"))
	if err != nil {
		t.Fatalf("dry-run of install/: %v\n%s", err, out)
	}
	for _, o := range objects {
		if !strings.Contains(out, o+" serverside-applied (server dry run)") {
			t.Errorf("dry-run output lacks %s:\n%s", o, out)
		}
	}

	// The same check rejects a broken manifest: a field the schema does
	// not know, and a value the API server's validation refuses.
	// Each must fail naming the broken field, not for some other reason.
	for name, edit := range map[string][3]string{
		"unknown field": {"hostNetwork: true", "hostNetwork: true\n      hostNetwrok: true", "hostNetwrok"},
		"invalid value": {"containerPort: 9779", "containerPort: 97790", "containerPort"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := copyInstall(t, root)
			ds := filepath.Join(dir, "daemonset.yaml")
			b, err := os.ReadFile(ds)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), edit[0]) {
				t.Fatalf("daemonset.yaml lacks %q to break", edit[0])
			}
			if err := os.WriteFile(ds, []byte(strings.Replace(string(b), edit[0], edit[1], 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := dryRun(cp, dir)
			if err == nil {
				t.Fatalf("dry-run accepted a broken DaemonSet:\n%s", out)
			}
			if !strings.Contains(err.Error(), edit[2]) {
				t.Errorf("dry-run failed without naming %s: %v", edit[2], err)
			}
		})
	}
}

// copyInstall copies install/ (with crds/) into a scratch directory.
func copyInstall(t *testing.T, root string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(root, "install"))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// The ServiceAccount can do what the helper does and nothing it does not:
// RBAC applied for real, then asked with SubjectAccessReviews, which need
// neither the CRDs nor discovery.
func TestRBACLeastPrivilege(t *testing.T) {
	cp := startServer(t)
	if out, err := cp.Kubectl("apply", "--server-side", "-f", filepath.Join(repoRoot(t), "install", "rbac.yaml")); err != nil {
		t.Fatalf("apply rbac: %v\n%s", err, out)
	}
	kube, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	const sa = "system:serviceaccount:sluice-system:sluice-helperd"
	for _, tc := range []struct {
		verb, group, resource, sub string
		want                       bool
	}{
		{"watch", "", "pods", "", true},
		{"list", "", "namespaces", "", true},
		{"get", "", "nodes", "", true},
		{"watch", "sluice.dev", "egresses", "", true},
		{"update", "sluice.dev", "egresses", "", true},
		{"list", "sluice.dev", "externalippools", "", true},
		{"patch", "sluice.dev", "egresses", "status", true},
		{"update", "sluice.dev", "externalippools", "status", true},
		{"create", "", "events", "", true},
		{"patch", "events.k8s.io", "events", "", true},
		// Not needed, so not granted.
		{"create", "sluice.dev", "egresses", "", false},
		{"delete", "sluice.dev", "egresses", "", false},
		{"patch", "sluice.dev", "egresses", "", false},
		{"delete", "sluice.dev", "externalippools", "", false},
		{"update", "sluice.dev", "externalippools", "", false},
		{"patch", "sluice.dev", "externalippools", "", false},
		{"update", "sluice.dev", "egresses", "status", false},
		{"patch", "sluice.dev", "externalippools", "status", false},
		{"update", "", "pods", "", false},
		{"patch", "", "nodes", "", false},
		{"get", "", "secrets", "", false},
		{"create", "coordination.k8s.io", "leases", "", false},
	} {
		name := strings.Trim(strings.Join([]string{tc.verb, tc.group, tc.resource, tc.sub}, "/"), "/")
		review, err := kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:sluice-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: tc.verb, Group: tc.group, Resource: tc.resource, Subresource: tc.sub,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("review %s: %v", name, err)
		}
		if review.Status.Allowed != tc.want {
			t.Errorf("%s allowed = %v, want %v (%s)", name, review.Status.Allowed, tc.want, review.Status.Reason)
		}
	}
}
