package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/sluicenet/sluice/integration/binaries"
	sluiceclient "github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

// Client is the admin Kubernetes client.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// SluiceClient is the admin client for Egress and ExternalIPPool.
func (c *Cluster) SluiceClient() sluiceclient.Interface { return c.sluice }

// Kubectl runs kubectl inside the cp namespace with the admin kubeconfig
// and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	// Resolved on first use: most tests never run kubectl, and a cold
	// kubectl build takes minutes.
	c.mu.Lock()
	if c.kubectl == "" {
		bin, err := binaries.Ensure(ctx, binaries.Kubectl)
		if err != nil {
			c.mu.Unlock()
			return "", err
		}
		c.kubectl = bin
	}
	c.mu.Unlock()
	full := append([]string{"netns", "exec", c.CP.Name, c.kubectl, "--kubeconfig=" + c.Kubeconfig()}, args...)
	out, err := execCommand(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// connectAPI makes the clients, waits for /readyz and installs the CRDs.
func (c *Cluster) connectAPI(ctx context.Context) error {
	cfg := c.RESTConfig()
	var err error
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if c.sluice, err = sluiceclient.NewForConfig(cfg); err != nil {
		return fmt.Errorf("sluice client: %w", err)
	}
	if err := c.waitReady(ctx, time.Minute); err != nil {
		return err
	}
	return c.installCRDs(ctx)
}

// waitReady polls /readyz until the apiserver answers ok.
func (c *Cluster) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		body, err := c.client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && bytes.Equal(bytes.TrimSpace(body), []byte("ok")) {
			return nil
		}
		last = fmt.Errorf("readyz: %w: %s", err, body)
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver not ready after %s: %w", limit, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs creates every CRD in install/crds and waits until each is
// Established, so that the first Egress create after Start succeeds.
func (c *Cluster) installCRDs(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(c.Opts.CRDDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRDs in %s: %v", c.Opts.CRDDir, err)
	}
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	crds := dyn.Resource(crdGVR)
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", obj.GetName(), err)
		}
		names = append(names, obj.GetName())
	}
	return poll(ctx, 30*time.Second, func() (bool, error) {
		for _, n := range names {
			obj, err := crds.Get(ctx, n, metav1.GetOptions{})
			if err != nil || !established(obj) {
				return false, nil
			}
		}
		return true, nil
	})
}

func established(obj *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
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
