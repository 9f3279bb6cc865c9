package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// Pod is a Pod object with a network namespace wired by the Node's CNI
// chain, as a container runtime would have done it.
type Pod struct {
	Namespace, Name string
	UID             string
	Node            *Node
	NS              *nstest.NS
	IP              netip.Addr
	ContainerID     string
	Result          *types100.Result // what the CNI chain returned
}

// String is namespace/name.
func (p *Pod) String() string { return p.Namespace + "/" + p.Name }

// AddPod creates the Pod object on node, a namespace for it, runs the
// Node's conflist through libcni from inside the Node namespace with the
// kubelet's CNI_ARGS, and records the Pod IP in status.podIPs. On error
// what was made is undone.
func (c *Cluster) AddPod(ctx context.Context, node, namespace, name string, labels map[string]string) (p *Pod, err error) {
	n := c.Node(node)
	if n == nil {
		return nil, fmt.Errorf("add pod %s/%s: no node %q", namespace, name, node)
	}
	if err := c.ensureServiceAccount(ctx, namespace); err != nil {
		return nil, err
	}
	obj, err := c.client.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   n.Name,
			Containers: []corev1.Container{{Name: "c", Image: "sluice.test/none"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", namespace, name, err)
	}
	p = &Pod{Namespace: namespace, Name: name, UID: string(obj.UID), Node: n, ContainerID: containerID(string(obj.UID))}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.DelPod(context.WithoutCancel(ctx), p))
		}
	}()
	c.mu.Lock()
	c.podSeq++
	seq := c.podSeq
	c.mu.Unlock()
	nsName := fmt.Sprintf("%s-p%d", filepath.Base(n.NS.Name)[len(nsPrefix()):], seq)
	if p.NS, err = newPodNS(nsName, rpFilterSysctls([]string{"lo"}, false)); err != nil {
		return p, err
	}
	c.mu.Lock()
	c.nsList = append(c.nsList, p.NS)
	c.mu.Unlock()
	if p.Result, err = n.cniAdd(ctx, p); err != nil {
		return p, err
	}
	if err = setSysctls(p.NS, rpFilterSysctls([]string{"lo", "eth0"}, false)); err != nil {
		return p, err
	}
	for _, ipc := range p.Result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			p.IP = a
			break
		}
	}
	if !p.IP.IsValid() {
		return p, fmt.Errorf("pod %s: CNI result has no IPv4 address: %v", p, p.Result)
	}
	obj.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: n.IP.String(), HostIPs: []corev1.HostIP{{IP: n.IP.String()}},
		PodIP: p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err = c.client.CoreV1().Pods(namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return p, fmt.Errorf("set status of pod %s: %w", p, err)
	}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	return p, nil
}

// Sandbox orders of RecreateSandbox: the kubelet normally tears the old
// sandbox down first; a runtime may also set the new one up first.
const (
	DelThenAdd = false
	AddThenDel = true
)

// RecreateSandbox gives the Pod a new sandbox, as the kubelet does after a
// sandbox dies: a new namespace and container ID, a CNI ADD that hands out
// a new IP, and the old sandbox's DEL, in the given order. The Pod object
// keeps its old status.podIPs until WritePodIP, as it does until the
// kubelet's next status update.
func (c *Cluster) RecreateSandbox(ctx context.Context, p *Pod, addFirst bool) error {
	old := *p
	c.mu.Lock()
	c.podSeq++
	seq := c.podSeq
	c.mu.Unlock()
	fresh := *p
	fresh.ContainerID = fmt.Sprintf("%s%04x", containerID(p.UID)[:28], seq)
	nsName := fmt.Sprintf("%s-p%d", filepath.Base(p.Node.NS.Name)[len(nsPrefix()):], seq)
	var err error
	if fresh.NS, err = newPodNS(nsName, rpFilterSysctls([]string{"lo"}, false)); err != nil {
		return err
	}
	c.mu.Lock()
	c.nsList = append(c.nsList, fresh.NS)
	c.mu.Unlock()
	delOld := func() error {
		err := p.Node.cniDel(ctx, &old)
		old.NS.Delete()
		c.forgetNS(old.NS)
		return err
	}
	if !addFirst {
		if err := delOld(); err != nil {
			return err
		}
	}
	if fresh.Result, err = p.Node.cniAdd(ctx, &fresh); err != nil {
		fresh.NS.Delete()
		c.forgetNS(fresh.NS)
		return err
	}
	if err := setSysctls(fresh.NS, rpFilterSysctls([]string{"lo", "eth0"}, false)); err != nil {
		return err
	}
	fresh.IP = netip.Addr{}
	for _, ipc := range fresh.Result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			fresh.IP = a
			break
		}
	}
	c.mu.Lock()
	*p = fresh
	c.mu.Unlock()
	if !fresh.IP.IsValid() {
		return fmt.Errorf("pod %s: CNI result has no IPv4 address: %v", p, fresh.Result)
	}
	if addFirst {
		return delOld()
	}
	return nil
}

// WritePodIP records the Pod's current sandbox IP in status.podIPs, as
// the kubelet's status update does.
func (c *Cluster) WritePodIP(ctx context.Context, p *Pod) error {
	pods := c.client.CoreV1().Pods(p.Namespace)
	obj, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", p, err)
	}
	obj.Status.PodIP = p.IP.String()
	obj.Status.PodIPs = []corev1.PodIP{{IP: p.IP.String()}}
	if _, err := pods.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of pod %s: %w", p, err)
	}
	return nil
}

// ensureServiceAccount creates the namespace's "default" ServiceAccount,
// which the apiserver's ServiceAccount admission requires of every Pod and
// which a controller-manager would have made (there is none here).
func (c *Cluster) ensureServiceAccount(ctx context.Context, namespace string) error {
	if _, done := c.serviceAccounts.Load(namespace); done {
		return nil
	}
	_, err := c.client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: namespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/default: %w", namespace, err)
	}
	c.serviceAccounts.Store(namespace, true)
	return nil
}

// nsPrefix is "sltest-<pid>-", the part of a namespace name every
// namespace of this process shares.
func nsPrefix() string { return fmt.Sprintf("%s%d-", nstest.Prefix, os.Getpid()) }

// DelPod runs CNI DEL for the Pod and deletes its namespace and object.
// It is safe on a half-made Pod and when called twice.
func (c *Cluster) DelPod(ctx context.Context, p *Pod) error {
	var errs []error
	if p.NS != nil {
		errs = append(errs, p.Node.cniDel(ctx, p))
		p.NS.Delete()
		c.forgetNS(p.NS)
		p.NS = nil
	}
	err := c.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, *metav1.NewDeleteOptions(0))
	if err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete pod %s: %w", p, err))
	}
	return errors.Join(errs...)
}

func (c *Cluster) forgetNS(n *nstest.NS) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.nsList {
		if x == n {
			c.nsList = append(c.nsList[:i], c.nsList[i+1:]...)
			return
		}
	}
}

// LabelPod replaces the labels of the Pod object.
func (c *Cluster) LabelPod(ctx context.Context, p *Pod, labels map[string]string) error {
	pods := c.client.CoreV1().Pods(p.Namespace)
	obj, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", p, err)
	}
	obj.Labels = labels
	if _, err := pods.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("relabel pod %s: %w", p, err)
	}
	return nil
}

// runtimeConf is what a kubelet hands libcni for this Pod.
func (n *Node) runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NS.Path,
		IfName:      "eth0",
		Args:        cniArgs(p.Namespace, p.Name, p.UID),
	}
}

func (n *Node) confList() (*libcni.NetworkConfigList, error) {
	l, err := libcni.ConfListFromFile(n.ConflistPath())
	if err != nil {
		return nil, fmt.Errorf("load conflist of %s: %w", n.Name, err)
	}
	return l, nil
}

// cniAdd runs ADD on a thread inside the Node namespace: the plugins are
// exec'd from it, so their "host" side is the Node, as under a runtime.
func (n *Node) cniAdd(ctx context.Context, p *Pod) (*types100.Result, error) {
	list, err := n.confList()
	if err != nil {
		return nil, err
	}
	var res *types100.Result
	err = ns.WithNetNSPath(n.NS.Path, func(ns.NetNS) error {
		r, err := n.cni.AddNetworkList(ctx, list, n.runtimeConf(p))
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cni add %s on %s: %w", p, n.Name, err)
	}
	return res, nil
}

func (n *Node) cniDel(ctx context.Context, p *Pod) error {
	list, err := n.confList()
	if err != nil {
		return err
	}
	err = ns.WithNetNSPath(n.NS.Path, func(ns.NetNS) error {
		return n.cni.DelNetworkList(ctx, list, n.runtimeConf(p))
	})
	if err != nil {
		return fmt.Errorf("cni del %s on %s: %w", p, n.Name, err)
	}
	return nil
}

// CNICheck runs CHECK for the Pod, as a runtime does periodically.
func (n *Node) CNICheck(ctx context.Context, p *Pod) error {
	list, err := n.confList()
	if err != nil {
		return err
	}
	return ns.WithNetNSPath(n.NS.Path, func(ns.NetNS) error {
		return n.cni.CheckNetworkList(ctx, list, n.runtimeConf(p))
	})
}

// Dial opens a TCP connection from inside the Pod.
func (p *Pod) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return dialIn(ctx, p.NS.Path, "tcp", addr)
}

// Whoami asks the external server which source address it saw from this
// Pod.
func (p *Pod) Whoami(ctx context.Context, e *Ext) (netip.Addr, error) {
	return e.Whoami(ctx, p)
}

// Exec runs a command inside the Pod's namespace.
func (p *Pod) Exec(ctx context.Context, name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", p.NS.Name, name}, args...)
	out, err := execCommand(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in pod %s: %w: %s", name, p, err, out)
	}
	return string(out), nil
}
