// Command sluice-full is the chained CNI plugin in Go, which the C front
// (plugin/shim, installed as type "sluice") falls back to. It goes last in
// a conflist; all the logic is in pkg/cniplugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sluicenet/sluice/pkg/cniplugin"
)

func main() {
	skel.PluginMainFuncs(cniplugin.Funcs(), version.All, cniplugin.About)
}
