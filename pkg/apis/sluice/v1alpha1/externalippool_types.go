package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ExternalIPPool holds IP ranges that Egresses can take their IPs from, and
// the Nodes those IPs may live on.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=eip
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.usage.total`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.usage.used`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ExternalIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ExternalIPPoolSpec `json:"spec"`
	// +optional
	Status ExternalIPPoolStatus `json:"status,omitempty"`
}

// ExternalIPPoolSpec is what the user asks for.
type ExternalIPPoolSpec struct {
	// IPRanges are the IPs of the pool.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	IPRanges []IPRange `json:"ipRanges"`

	// NodeSelector picks the Nodes that may hold this pool's IPs. Empty or
	// absent selects every Node.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['Exists', 'DoesNotExist'] ? !has(e.values) || size(e.values) == 0 : has(e.values) && size(e.values) > 0)",message="matchExpressions values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
	NodeSelector metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// IPRange is either a CIDR or an inclusive start/end pair. A CIDR leaves out
// its network address and, for IPv4, its broadcast address.
//
// +kubebuilder:validation:XValidation:rule="has(self.cidr) ? !has(self.start) && !has(self.end) : has(self.start) && has(self.end)",message="exactly one of cidr or start and end must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.start) || !has(self.end) || !isIP(self.start) || !isIP(self.end) || ip(self.start).family() == ip(self.end).family()",message="start and end must be of the same IP family",fieldPath=".end"
// +kubebuilder:validation:XValidation:rule="!has(self.start) || !has(self.end) || !isIP(self.start) || !isIP(self.end) || ip(self.start).family() != 4 || ip(self.end).family() != 4 || int(self.start.split('.')[0]) * 16777216 + int(self.start.split('.')[1]) * 65536 + int(self.start.split('.')[2]) * 256 + int(self.start.split('.')[3]) <= int(self.end.split('.')[0]) * 16777216 + int(self.end.split('.')[1]) * 65536 + int(self.end.split('.')[2]) * 256 + int(self.end.split('.')[3])",message="start must not be greater than end",fieldPath=".start"
type IPRange struct {
	// CIDR is a network such as 192.0.2.0/28.
	// +optional
	// +kubebuilder:validation:MaxLength=49
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a valid CIDR such as 192.0.2.0/28"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self).masked()) == self",message="must be a network address, with the host bits zero (such as 192.0.2.0/28)"
	CIDR string `json:"cidr,omitempty"`
	// Start is the first IP of the range.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be a valid IPv4 or IPv6 address"
	Start string `json:"start,omitempty"`
	// End is the last IP of the range, included.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be a valid IPv4 or IPv6 address"
	End string `json:"end,omitempty"`
}

// ExternalIPPoolStatus is what Sluice observed.
type ExternalIPPoolStatus struct {
	// +optional
	Usage IPPoolUsage `json:"usage,omitempty"`
	// Allocations records which Egress holds which IP of the pool. It is
	// the allocators' lock: an IP is taken by one status update with a
	// resourceVersion precondition, so two allocators racing can never hand
	// out one IP twice, and the list being a map keyed by IP makes the API
	// server refuse a duplicate outright.
	// +optional
	// +listType=map
	// +listMapKey=ip
	Allocations []IPAllocation `json:"allocations,omitempty"`
}

// IPAllocation is one IP of a pool held by one Egress.
type IPAllocation struct {
	// IP is the allocated address.
	IP string `json:"ip"`
	// Egress is the name of the Egress that holds it.
	Egress string `json:"egress"`
}

// IPPoolUsage counts the IPs of a pool.
type IPPoolUsage struct {
	// Total is the number of usable IPs in the pool.
	Total int64 `json:"total"`
	// Used is the number of IPs allocated to Egresses.
	Used int64 `json:"used"`
}

// ExternalIPPoolList is a list of ExternalIPPools.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type ExternalIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []ExternalIPPool `json:"items"`
}
