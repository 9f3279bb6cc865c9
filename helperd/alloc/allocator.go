package alloc

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/sluicenet/sluice/helperd/egstatus"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Recorder emits Kubernetes Events; client-go's record.EventRecorder is one.
type Recorder interface {
	Eventf(obj runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Allocator writes the plans to the API server.
type Allocator struct {
	Client   versioned.Interface
	Recorder Recorder // may be nil
	Now      func() time.Time

	// Retries bounds how often one Sync re-plans after a conflict.
	Retries int

	// NodeIPs returns every Node's IP by name (may be nil), and
	// ClusterCIDRs are the Pod and Service CIDRs: neither is ever handed
	// out (see Reserved).
	NodeIPs      func() map[string]netip.Addr
	ClusterCIDRs []netip.Prefix
}

// Sync brings every pool's allocations, every pooled Egress's IP and its
// IPAllocated condition in line with the plan. pools and egresses may come
// from an informer cache: a stale cache only costs a conflict, after which
// Sync re-reads the pool and the Egresses from the API server and plans
// again.
func (a *Allocator) Sync(ctx context.Context, pools []*v1alpha1.ExternalIPPool, egresses []*v1alpha1.Egress) error {
	var errs []error
	var nodes map[string]netip.Addr
	if a.NodeIPs != nil {
		nodes = a.NodeIPs()
	}
	w := World{Claims: NewClaims(pools, egresses), Reserved: Reserved(nodes, a.ClusterCIDRs)}
	names := map[string]bool{}
	for _, p := range pools {
		names[p.Name] = true
		if err := a.syncPool(ctx, p, egresses, w); err != nil {
			errs = append(errs, err)
		}
	}
	setIP, conds := Orphans(names, egresses)
	// A static Egress may use a Node's address (it is on that Node
	// already), but nothing else a pool may not give.
	for name, c := range StaticConditions(egresses, w.Claims, Reserved(nil, a.ClusterCIDRs)) {
		conds[name] = c
	}
	byName := index(egresses)
	for name, ip := range setIP {
		errs = append(errs, a.setIP(ctx, name, ip, ""))
	}
	for name, c := range conds {
		errs = append(errs, a.condition(ctx, byName[name], c))
	}
	return errors.Join(errs...)
}

func (a *Allocator) syncPool(ctx context.Context, pool *v1alpha1.ExternalIPPool, egresses []*v1alpha1.Egress, w World) error {
	retries := a.Retries
	if retries == 0 {
		retries = 8
	}
	for attempt := 0; ; attempt++ {
		plan := Allocate(pool, egresses, w)
		err := a.commitPool(ctx, pool, plan)
		if err == nil {
			// The pools planned next must not hand these out again, even
			// before the Egresses carry them.
			for _, al := range plan.Allocations {
				if ip, err := netip.ParseAddr(al.IP); err == nil {
					w.Claims.Take(ip, al.Egress)
				}
			}
		}
		if apierrors.IsConflict(err) && attempt < retries {
			// Someone else changed the pool: plan again from fresh objects.
			if pool, egresses, err = a.fresh(ctx, pool.Name); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		return a.finish(ctx, pool, plan, index(egresses))
	}
}

// commitPool writes allocations and usage: the step that takes IPs.
func (a *Allocator) commitPool(ctx context.Context, pool *v1alpha1.ExternalIPPool, plan Allocation) error {
	if slices.Equal(pool.Status.Allocations, plan.Allocations) && pool.Status.Usage == plan.Usage {
		return nil
	}
	p := pool.DeepCopy()
	p.Status.Allocations, p.Status.Usage = plan.Allocations, plan.Usage
	if _, err := a.Client.SluiceV1alpha1().ExternalIPPools().UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of pool %s: %w", pool.Name, err)
	}
	return nil
}

// finish writes the Egresses' IPs and conditions once the pool holds them.
func (a *Allocator) finish(ctx context.Context, pool *v1alpha1.ExternalIPPool, plan Allocation, byName map[string]*v1alpha1.Egress) error {
	var errs []error
	for name, ip := range plan.SetIP {
		from := pool.Name
		if ip == "" {
			from = ""
		}
		errs = append(errs, a.setIP(ctx, name, ip, from))
	}
	for name, c := range plan.Conditions {
		errs = append(errs, a.condition(ctx, byName[name], c))
	}
	return errors.Join(errs...)
}

func (a *Allocator) fresh(ctx context.Context, pool string) (*v1alpha1.ExternalIPPool, []*v1alpha1.Egress, error) {
	p, err := a.Client.SluiceV1alpha1().ExternalIPPools().Get(ctx, pool, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("get pool %s: %w", pool, err)
	}
	list, err := a.Client.SluiceV1alpha1().Egresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list egresses: %w", err)
	}
	egs := make([]*v1alpha1.Egress, len(list.Items))
	for i := range list.Items {
		egs[i] = &list.Items[i]
	}
	return p, egs, nil
}

// setIP writes spec.egressIP (from = the pool, "" to clear an allocation).
func (a *Allocator) setIP(ctx context.Context, name, ip, from string) error {
	egs := a.Client.SluiceV1alpha1().Egresses()
	for attempt := 0; attempt < 3; attempt++ {
		eg, err := egs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get egress %s: %w", name, err)
		}
		eg.Spec.EgressIP = ip
		if from == "" {
			delete(eg.Annotations, AllocatedFromAnnotation)
		} else {
			if eg.Annotations == nil {
				eg.Annotations = map[string]string{}
			}
			eg.Annotations[AllocatedFromAnnotation] = from
		}
		_, err = egs.Update(ctx, eg, metav1.UpdateOptions{FieldManager: egstatus.ManagerAllocation})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write egressIP %q into egress %s: %w", ip, name, err)
		}
		return nil
	}
	return fmt.Errorf("write egressIP %q into egress %s: kept conflicting", ip, name)
}

func (a *Allocator) condition(ctx context.Context, eg *v1alpha1.Egress, c Condition) error {
	if eg == nil {
		return nil
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	cond := egstatus.Condition(eg.Status.Conditions, v1alpha1.IPAllocated, c.Allocated, c.Reason, c.Message, eg.Generation, now())
	if old, ok := egstatus.Find(eg.Status.Conditions, v1alpha1.IPAllocated); ok && egstatus.Same(old, cond) {
		return nil
	}
	if err := egstatus.ApplyAllocation(ctx, a.Client, eg.Name, cond); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted while we planned
		}
		return err
	}
	if a.Recorder != nil {
		if c.Allocated {
			a.Recorder.Eventf(eg, corev1.EventTypeNormal, c.Reason, "%s", c.Message)
		} else {
			a.Recorder.Eventf(eg, corev1.EventTypeWarning, "AllocationFailed", "%s: %s", c.Reason, c.Message)
		}
	}
	return nil
}

func index(egresses []*v1alpha1.Egress) map[string]*v1alpha1.Egress {
	m := make(map[string]*v1alpha1.Egress, len(egresses))
	for _, eg := range egresses {
		m[eg.Name] = eg
	}
	return m
}
