package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/integration/images"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// A DaemonSet created through the API alone gets one running Pod on every
// real Node: the controller manager makes the Pods and publishes
// kube-root-ca.crt, the scheduler binds them, each kubelet mounts the
// service-account token (which needs that ConfigMap) and starts them
// through containerd and the Node's CNI chain. This is the path the
// Sluice DaemonSet takes in a user's cluster.
func TestDaemonSetRunsOnEveryRealNode(t *testing.T) {
	nstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("starts containerd and a kubelet per Node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := cluster.New(t, cluster.Options{Nodes: 2, Kubelet: true})
	client, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "everywhere"}
	grace := int64(1)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "everywhere", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: "main", Image: images.PauseRef, ImagePullPolicy: corev1.PullNever,
					}},
				},
			},
		},
	}
	begin := time.Now()
	if _, err := client.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	var last string
	for {
		list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=everywhere"})
		if err == nil {
			pods, last = list.Items, fmt.Sprint(podSummary(list.Items))
			if running(pods) == len(c.Nodes) {
				break
			}
		}
		if time.Since(begin) > 2*time.Minute {
			t.Fatalf("the DaemonSet's Pods did not all run: %s", last)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("DaemonSet running on %d Nodes %s after create", len(c.Nodes), time.Since(begin).Round(time.Millisecond))

	seen := map[string]bool{}
	for _, p := range pods {
		n := c.Node(p.Spec.NodeName)
		if n == nil {
			t.Fatalf("pod %s is on %q, not a Node of the cluster", p.Name, p.Spec.NodeName)
		}
		seen[n.Name] = true
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !n.PodCIDR.Contains(ip) {
			t.Errorf("pod %s on %s has IP %q, outside the Node's Pod CIDR %s", p.Name, n.Name, p.Status.PodIP, n.PodCIDR)
			continue
		}
		// The kernel holds it: the Pod's address answers on its Node.
		if _, err := n.NS.Run("ping", "-c", "1", "-W", "2", ip.String()); err != nil {
			t.Errorf("pod %s does not answer at %s on %s: %v", p.Name, ip, n.Name, err)
		}
		var token bool
		for _, v := range p.Spec.Volumes {
			if v.Projected != nil && len(v.Projected.Sources) > 0 {
				token = true
			}
		}
		if !token {
			t.Errorf("pod %s has no service-account token volume: %v", p.Name, p.Spec.Volumes)
		}
	}
	if len(seen) != len(c.Nodes) {
		t.Errorf("pods on %v, want one on each of %d Nodes", seen, len(c.Nodes))
	}
	// The status the controller writes back agrees.
	got, err := client.AppsV1().DaemonSets("default").Get(ctx, "everywhere", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.DesiredNumberScheduled != int32(len(c.Nodes)) {
		t.Errorf("desiredNumberScheduled = %d, want %d", got.Status.DesiredNumberScheduled, len(c.Nodes))
	}
}

// running counts the Pods Running with an IP.
func running(pods []corev1.Pod) int {
	var n int
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			n++
		}
	}
	return n
}

// podSummary is one line per Pod for a failure message.
func podSummary(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		line := fmt.Sprintf("%s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Waiting != nil {
				line += " (" + cs.State.Waiting.Reason + ": " + cs.State.Waiting.Message + ")"
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				line += " [" + cond.Message + "]"
			}
		}
		out = append(out, line)
	}
	return out
}
