//go:build tools

// Package deps keeps the chosen libraries in go.mod while the code that
// uses them is being written, so that `go mod tidy` by one engineer does
// not drop a module another is about to import. Remove it once every
// module below is imported by real code.
package deps

import (
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/coreos/go-iptables/iptables"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gofrs/flock"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/mdlayher/arp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "k8s.io/client-go/informers"
)
