package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	sluiceclient "github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

// Client is the admin Kubernetes client.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// SluiceClient is the admin client for Egress and ExternalIPPool.
func (c *Cluster) SluiceClient() sluiceclient.Interface { return c.sluice }

// Kubectl runs kubectl inside the cp namespace with the admin kubeconfig
// and returns its stdout.
func (c *Cluster) Kubectl(args ...string) (string, error) { return c.cp.Kubectl(args...) }

// KubectlInput is Kubectl with stdin (for `apply -f -`).
func (c *Cluster) KubectlInput(stdin string, args ...string) (string, error) {
	return c.cp.KubectlInput(stdin, args...)
}

// connectAPI makes the clients and installs the CRDs (controlplane.Start
// has already waited for /readyz).
func (c *Cluster) connectAPI(ctx context.Context) error {
	cfg := c.RESTConfig()
	var err error
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if c.sluice, err = sluiceclient.NewForConfig(cfg); err != nil {
		return fmt.Errorf("sluice client: %w", err)
	}
	return c.cp.InstallCRDs(ctx)
}

// registerNodes creates the Node objects: labels, Pod CIDR, and, through
// the status subresource, the InternalIP and a Ready condition.
func (c *Cluster) registerNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		labels := map[string]string{
			"kubernetes.io/hostname": n.Name,
			"kubernetes.io/os":       "linux",
		}
		if c.Opts.NodeLabels != nil {
			for k, v := range c.Opts.NodeLabels(n.Index, n.Name) {
				labels[k] = v
			}
		}
		obj := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		}
		created, err := c.client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
		if c.Opts.Kubelet {
			continue // the kubelet reports the status itself
		}
		now := metav1.Now()
		created.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		}
		created.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "TestCluster",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		if _, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("set status of node %s: %w", n.Name, err)
		}
	}
	return nil
}

// CreateNamespace creates a Kubernetes namespace with labels.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// LabelNamespace replaces the labels of a Kubernetes namespace (keeping
// the automatic kubernetes.io/metadata.name).
func (c *Cluster) LabelNamespace(ctx context.Context, name string, labels map[string]string) error {
	nsc := c.client.CoreV1().Namespaces()
	obj, err := nsc.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", name, err)
	}
	obj.Labels = withName(labels, name)
	if _, err := nsc.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("relabel namespace %s: %w", name, err)
	}
	return nil
}

func withName(labels map[string]string, name string) map[string]string {
	out := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// poll calls cond every 50 ms until it returns true, an error, or limit
// passes.
func poll(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met within %s: %w", limit, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Cordon sets or clears a Node's spec.unschedulable, as `kubectl cordon`
// and `kubectl uncordon` do.
func (c *Cluster) Cordon(ctx context.Context, node string, cordoned bool) error {
	nodes := c.client.CoreV1().Nodes()
	obj, err := nodes.Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", node, err)
	}
	obj.Spec.Unschedulable = cordoned
	if _, err := nodes.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("cordon node %s (%v): %w", node, cordoned, err)
	}
	return nil
}
