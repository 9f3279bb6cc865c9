// Package v1alpha1 holds the sluice.dev/v1alpha1 API: Egress and
// ExternalIPPool, both cluster-scoped.
//
// +k8s:deepcopy-gen=package
// +groupName=sluice.dev
// +kubebuilder:object:generate=true
package v1alpha1
