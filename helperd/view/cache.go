// Package view is what the helper sees: the API's objects, through shared
// informers (Cache), and the addresses configured on its Node
// (WatchAddrs). The agent reads both into each reconcile's Snapshot.
package view

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluicenet/sluice/pkg/client/informers/externalversions"
	sluicelisters "github.com/sluicenet/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Cache is the helper's view of the API: shared informers for Egress,
// ExternalIPPool, Pod, Namespace and Node.
type Cache struct {
	kube      kubernetes.Interface
	kubeF     informers.SharedInformerFactory
	sluiceF   sluiceinformers.SharedInformerFactory
	pods      corelisters.PodLister
	nss       corelisters.NamespaceLister
	nodes     corelisters.NodeLister
	egresses  sluicelisters.EgressLister
	pools     sluicelisters.ExternalIPPoolLister
	informers []cache.SharedIndexInformer

	mu         sync.Mutex
	direct     map[string]*corev1.Pod // Pods read directly for a CNI ADD the informer has not seen yet
	localAddrs map[netip.Addr]bool
}

// New builds the informers; Start runs them.
func New(kube kubernetes.Interface, sl versioned.Interface) *Cache {
	c := &Cache{kube: kube, direct: map[string]*corev1.Pod{}, localAddrs: map[netip.Addr]bool{}}
	c.kubeF = informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithTransform(stripManagedFields))
	c.sluiceF = sluiceinformers.NewSharedInformerFactory(sl, 0)
	podInf := c.kubeF.Core().V1().Pods()
	nsInf := c.kubeF.Core().V1().Namespaces()
	nodeInf := c.kubeF.Core().V1().Nodes()
	egInf := c.sluiceF.Sluice().V1alpha1().Egresses()
	poolInf := c.sluiceF.Sluice().V1alpha1().ExternalIPPools()
	c.pods, c.nss, c.nodes = podInf.Lister(), nsInf.Lister(), nodeInf.Lister()
	c.egresses, c.pools = egInf.Lister(), poolInf.Lister()
	c.informers = []cache.SharedIndexInformer{podInf.Informer(), nsInf.Informer(), nodeInf.Informer(),
		egInf.Informer(), poolInf.Informer()}
	return c
}

// stripManagedFields keeps the cache small: with 10,000 Pods, managed
// fields are most of the memory and nothing here reads them. Pods are cut
// down to what selection and the datapath read (real Pods carry container
// specs many times that size).
func stripManagedFields(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return &corev1.Pod{
			TypeMeta: p.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
				ResourceVersion: p.ResourceVersion, CreationTimestamp: p.CreationTimestamp,
				DeletionTimestamp: p.DeletionTimestamp},
			Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
			Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
		}, nil
	}
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// OnChange calls fn on every add, update or delete of any watched object.
// fn must not block.
func (c *Cache) OnChange(fn func()) {
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { fn() },
		UpdateFunc: func(any, any) { fn() },
		DeleteFunc: func(any) { fn() },
	}
	for _, inf := range c.informers {
		_, _ = inf.AddEventHandler(h)
	}
}

// Start runs the informers and waits until they have synced.
func (c *Cache) Start(ctx context.Context) error {
	c.kubeF.Start(ctx.Done())
	c.sluiceF.Start(ctx.Done())
	for _, inf := range c.informers {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
		}
	}
	return nil
}

// EnsurePod reads a Pod straight from the API server when the informer has
// not seen it yet, so that a brand-new Pod's labels are known at its ADD.
func (c *Cache) EnsurePod(ctx context.Context, ns, name string) {
	if _, err := c.pods.Pods(ns).Get(name); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	p, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	c.mu.Lock()
	c.direct[ns+"/"+name] = p
	c.mu.Unlock()
}

// Pod returns a Pod from the informer, or as EnsurePod read it.
func (c *Cache) Pod(ns, name string) (*corev1.Pod, bool) {
	if p, err := c.pods.Pods(ns).Get(name); err == nil {
		return p, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.direct[ns+"/"+name]
	return p, ok
}

// SetLocalAddrs records the IPs configured on this Node by others.
func (c *Cache) SetLocalAddrs(addrs map[netip.Addr]bool) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(addrs) == len(c.localAddrs) {
		same := true
		for a := range addrs {
			if !c.localAddrs[a] {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	c.localAddrs = addrs
	return true
}

// Egresses lists the Egresses.
func (c *Cache) Egresses() []*v1alpha1.Egress {
	egs, _ := c.egresses.List(labels.Everything())
	return egs
}

// Pools lists the ExternalIPPools.
func (c *Cache) Pools() []*v1alpha1.ExternalIPPool {
	ps, _ := c.pools.List(labels.Everything())
	return ps
}

// Egress returns one Egress, or nil.
func (c *Cache) Egress(name string) *v1alpha1.Egress {
	eg, err := c.egresses.Get(name)
	if err != nil {
		return nil
	}
	return eg
}

// Nodes returns every Node's IP and labels.
func (c *Cache) Nodes() map[string]placement.NodeInfo {
	nodes, _ := c.nodes.List(labels.Everything())
	out := make(map[string]placement.NodeInfo, len(nodes))
	for _, n := range nodes {
		info := placement.NodeInfo{IP: NodeIP(n), Labels: n.Labels, Unschedulable: n.Spec.Unschedulable, NotReady: notReady(n)}
		for _, c := range n.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(c); err == nil {
				info.PodCIDRs = append(info.PodCIDRs, p.Masked())
			}
		}
		out[n.Name] = info
	}
	return out
}

// notReady: the Node's Ready condition is False or Unknown. A Node without
// one (just registered, or a test's) counts as ready.
func notReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionTrue
		}
	}
	return false
}

// NodeIPs maps every Node to its IP (NodeIP): what no pool hands out.
func (c *Cache) NodeIPs() map[string]netip.Addr { return placement.NodeIPs(c.Nodes()) }

// NodeIP is a Node's first IPv4 InternalIP, or else its first InternalIP.
func NodeIP(n *corev1.Node) netip.Addr {
	var first netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Is4() {
			return ip
		}
		if !first.IsValid() {
			first = ip
		}
	}
	return first
}

// Snapshot assembles the inputs of one reconcile. Attachments are this
// Node's CNI reports: they supply IPs that the Pod object may not carry yet.
func (c *Cache) Snapshot(self string, atts []cniproto.Attachment) placement.Snapshot {
	s := placement.Snapshot{Self: self, Egresses: c.Egresses(), Pools: map[string]*v1alpha1.ExternalIPPool{},
		Namespaces: map[string]map[string]string{}, Nodes: c.Nodes()}
	for _, p := range c.Pools() {
		s.Pools[p.Name] = p
	}
	nss, _ := c.nss.List(labels.Everything())
	for _, n := range nss {
		s.Namespaces[n.Name] = n.Labels
	}
	pods, _ := c.pods.List(labels.Everything())
	byKey := make(map[policy.PodKey]int, len(pods))
	for _, p := range pods {
		byKey[policy.PodKey{Namespace: p.Namespace, Name: p.Name}] = len(s.Pods)
		s.Pods = append(s.Pods, policy.PodInfoFromPod(p))
	}
	c.mu.Lock()
	for key, p := range c.direct {
		if _, err := c.pods.Pods(p.Namespace).Get(p.Name); err == nil {
			delete(c.direct, key) // the informer has it now
			continue
		}
		byKey[policy.PodKey{Namespace: p.Namespace, Name: p.Name}] = len(s.Pods)
		s.Pods = append(s.Pods, policy.PodInfoFromPod(p))
	}
	s.LocalAddrs = c.localAddrs
	c.mu.Unlock()
	mergeAttachments(&s, byKey, self, atts)
	return s
}

// mergeAttachments folds this Node's CNI attachments into the Pods. The
// CNI's IPs are the truth for a Pod on its own Node: they replace the Pod
// object's, which lag a recreated sandbox until the kubelet writes the new
// status. While an old and a new sandbox both exist (ADD before DEL), both
// IPs count. An IP that a sandbox of one Pod holds is taken from every other
// local Pod object still naming it (a deleted Pod's stale status), so a
// reused IP never carries its previous owner's Egress.
func mergeAttachments(s *placement.Snapshot, byKey map[policy.PodKey]int, self string, atts []cniproto.Attachment) {
	fresh := map[policy.PodKey][]netip.Addr{}
	var order []policy.PodKey
	for _, att := range atts {
		if att.PodNamespace == "" || att.PodName == "" {
			continue
		}
		key := policy.PodKey{Namespace: att.PodNamespace, Name: att.PodName}
		if _, seen := fresh[key]; !seen {
			order = append(order, key)
			fresh[key] = []netip.Addr{}
		}
		for _, s := range att.PodIPs {
			if ip, err := netip.ParseAddr(cniproto.IPOnly(s)); err == nil && !slices.Contains(fresh[key], ip.Unmap()) {
				fresh[key] = append(fresh[key], ip.Unmap())
			}
		}
	}
	owner := map[netip.Addr]policy.PodKey{}
	for _, key := range order {
		i, ok := byKey[key]
		if !ok {
			// No Pod object: only its Namespace is known, so only Egresses
			// selecting by Namespace alone can match, which is right.
			byKey[key] = len(s.Pods)
			s.Pods = append(s.Pods, policy.PodInfo{Namespace: key.Namespace, Name: key.Name, Node: self,
				IPs: fresh[key], Phase: corev1.PodPending})
		} else {
			p := &s.Pods[i]
			if p.Node != "" && p.Node != self {
				continue // a sandbox left behind by a Pod now scheduled elsewhere
			}
			p.Node = self
			if len(fresh[key]) > 0 {
				p.IPs = fresh[key]
			}
			if p.Phase == "" {
				p.Phase = corev1.PodPending
			}
		}
		for _, ip := range fresh[key] {
			owner[ip] = key
		}
	}
	if len(owner) == 0 {
		return
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		if p.Node != self {
			continue
		}
		key := policy.PodKey{Namespace: p.Namespace, Name: p.Name}
		p.IPs = slices.DeleteFunc(slices.Clone(p.IPs), func(ip netip.Addr) bool {
			o, ok := owner[ip]
			return ok && o != key
		})
		if len(p.IPs) == 0 {
			p.IPs = nil
		}
	}
}
