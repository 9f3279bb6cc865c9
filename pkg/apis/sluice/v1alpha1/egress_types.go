package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types on an Egress.
const (
	// IPAllocated tells whether the Egress has an IP: taken from its
	// ExternalIPPool, or given statically in spec.egressIP.
	IPAllocated = "IPAllocated"
	// IPAssigned tells whether a Node holds the egress IP.
	IPAssigned = "IPAssigned"
)

// Condition reasons on an Egress.
const (
	ReasonAllocated      = "Allocated"
	ReasonPoolExhausted  = "PoolExhausted"
	ReasonIPNotInPool    = "IPNotInPool"
	ReasonPoolNotFound   = "PoolNotFound"
	ReasonInvalidPool    = "InvalidPool"
	ReasonStatic         = "Static"
	ReasonAssigned       = "Assigned"
	ReasonNoEligibleNode = "NoEligibleNode"
	ReasonNotFound       = "IPNotFoundOnAnyNode"
	// ReasonNoQuorum: the helper that would hold the IP sees too few of the
	// cluster's Nodes to know that no other Node holds it.
	ReasonNoQuorum = "NoQuorum"
	// ReasonIPConflict: another host on the link answers ARP for the IP, so
	// the Node that would hold it does not.
	ReasonIPConflict = "IPConflict"
)

// Egress sends the traffic of the Pods it selects to the external network
// with one source IP, through the Node that holds that IP.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=eg
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="EgressIP",type=string,JSONPath=`.status.egressIP`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.egressNode`
type Egress struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec EgressSpec `json:"spec"`
	// +optional
	Status EgressStatus `json:"status,omitempty"`
}

// EgressSpec is what the user asks for.
//
// +kubebuilder:validation:XValidation:rule="has(self.egressIP) || has(self.externalIPPool)",message="at least one of egressIP or externalIPPool must be set",fieldPath=".egressIP"
type EgressSpec struct {
	// AppliedTo selects the Pods whose external traffic this Egress
	// carries. An empty appliedTo selects nothing.
	// +required
	AppliedTo AppliedTo `json:"appliedTo"`

	// EgressIP is the SNAT IP, IPv4 or IPv6. With externalIPPool it must
	// lie inside the pool; without it the IP is static and must be
	// configured on one Node by hand. When only externalIPPool is given,
	// Sluice writes the allocated IP here.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be a valid IPv4 or IPv6 address"
	EgressIP string `json:"egressIP,omitempty"`

	// ExternalIPPool names the pool to allocate egressIP from. Its
	// nodeSelector also decides which Nodes may hold the IP.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ExternalIPPool string `json:"externalIPPool,omitempty"`
}

// AppliedTo selects Pods. podSelector alone selects cluster-wide;
// namespaceSelector alone selects every Pod of the matching Namespaces;
// both select the matching Pods of the matching Namespaces.
type AppliedTo struct {
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['Exists', 'DoesNotExist'] ? !has(e.values) || size(e.values) == 0 : has(e.values) && size(e.values) > 0)",message="matchExpressions values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['Exists', 'DoesNotExist'] ? !has(e.values) || size(e.values) == 0 : has(e.values) && size(e.values) > 0)",message="matchExpressions values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// EgressStatus is what Sluice observed.
type EgressStatus struct {
	// EgressNode is the Node that holds the egress IP.
	// +optional
	EgressNode string `json:"egressNode,omitempty"`
	// EgressIP is the IP in effect.
	// +optional
	EgressIP string `json:"egressIP,omitempty"`
	// Conditions are IPAllocated and IPAssigned.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// EgressList is a list of Egresses.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type EgressList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []Egress `json:"items"`
}
