// Package manifests_test checks install/: every object passes server-side
// dry-run on the real kube-apiserver, the RBAC grants what the helper needs
// and no more, and every flag the manifests name exists in the binaries.
package manifests_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/sluicenet/sluice/helperd/config"
	"github.com/sluicenet/sluice/integration/binaries"
)

// installerPrefix marks ConfigMap keys that configure sluice-cni-install
// rather than sluice-helperd (see install/configmap.yaml).
const installerPrefix = "cni-install."

// flagSets are the known flags of each binary a container may run.
type flagSets map[string]func(name string) bool

// checkFlags returns one problem per unknown flag, undefined $(VAR) and
// unknown or unused ConfigMap key, each naming the flag, variable or key.
func checkFlags(ds *appsv1.DaemonSet, cm *corev1.ConfigMap, known flagSets) []string {
	var bad []string
	usedKeys := map[string]bool{}
	spec := ds.Spec.Template.Spec
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if len(c.Command) == 0 {
			bad = append(bad, fmt.Sprintf("container %s: no command", c.Name))
			continue
		}
		bin := c.Command[0]
		has, ok := known[bin]
		if !ok {
			bad = append(bad, fmt.Sprintf("container %s: unknown binary %q", c.Name, bin))
			continue
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
			if r := e.ValueFrom; r != nil && r.ConfigMapKeyRef != nil {
				usedKeys[r.ConfigMapKeyRef.Key] = true
				if _, ok := cm.Data[r.ConfigMapKeyRef.Key]; !ok && r.ConfigMapKeyRef.Name == cm.Name {
					bad = append(bad, fmt.Sprintf("container %s: env %s reads missing ConfigMap key %q", c.Name, e.Name, r.ConfigMapKeyRef.Key))
				}
			}
		}
		for _, a := range slices.Concat(c.Command[1:], c.Args) {
			if name, isFlag := flagName(a); isFlag && !has(name) {
				bad = append(bad, fmt.Sprintf("container %s: --%s is not a flag of %s", c.Name, name, bin))
			}
			for _, m := range varRef.FindAllStringSubmatch(a, -1) {
				if !env[m[1]] {
					bad = append(bad, fmt.Sprintf("container %s: $(%s) in %q is not in its env, so it would pass literally", c.Name, m[1], a))
				}
			}
		}
	}
	for key := range cm.Data {
		bin, name := "sluice-helperd", key
		if rest, ok := strings.CutPrefix(key, installerPrefix); ok {
			bin, name = "sluice-cni-install", rest
		}
		if has := known[bin]; has == nil || !has(name) {
			bad = append(bad, fmt.Sprintf("ConfigMap key %q: --%s is not a flag of %s", key, name, bin))
		}
		if !usedKeys[key] {
			bad = append(bad, fmt.Sprintf("ConfigMap key %q is read by no container", key))
		}
	}
	slices.Sort(bad)
	return bad
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// flagName returns the name in "--name=value", "-name" or "--name".
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name, name != ""
}

// helperdFlags builds sluice-helperd's flag set the way its main does.
func helperdFlags() func(string) bool {
	fs := flag.NewFlagSet("sluice-helperd", flag.ContinueOnError)
	config.Bind(fs)
	return func(name string) bool { return fs.Lookup(name) != nil }
}

// usageFlag matches a flag line of Go's flag.PrintDefaults.
var usageFlag = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][-A-Za-z0-9._]*)`)

// installerFlags parses `sluice-cni-install -h`, which exits non-zero
// after printing its usage: the exit status is ignored, the output is not.
func installerFlags(t *testing.T, root string) func(string) bool {
	t.Helper()
	cmd := exec.Command("go", "run", "./conflist/cmd/sluice-cni-install", "-h")
	cmd.Dir = root
	out, _ := cmd.CombinedOutput()
	names := map[string]bool{}
	for _, m := range usageFlag.FindAllStringSubmatch(string(out), -1) {
		names[m[1]] = true
	}
	if !names["watch"] || !names["plugin-binary"] {
		t.Fatalf("could not parse sluice-cni-install -h (no -watch or -plugin-binary):\n%s", out)
	}
	return func(name string) bool { return names[name] }
}

// decodeFile decodes one YAML object.
func decodeFile(t *testing.T, path string, into any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(into); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestManifestFlagsExist(t *testing.T) {
	root := repoRoot(t)
	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	decodeFile(t, filepath.Join(root, "install", "daemonset.yaml"), &ds)
	decodeFile(t, filepath.Join(root, "install", "configmap.yaml"), &cm)
	if ds.Kind != "DaemonSet" || cm.Kind != "ConfigMap" || len(cm.Data) == 0 {
		t.Fatalf("decoded %q and %q with %d keys; want a DaemonSet and a ConfigMap with data", ds.Kind, cm.Kind, len(cm.Data))
	}
	known := flagSets{"sluice-helperd": helperdFlags(), "sluice-cni-install": installerFlags(t, root)}
	for _, p := range checkFlags(&ds, &cm, known) {
		t.Error(p)
	}
}

// The check itself catches what it is for, each problem by name.
func TestCheckFlagsReports(t *testing.T) {
	ds := &appsv1.DaemonSet{}
	ds.Spec.Template.Spec.Containers = []corev1.Container{{
		Name:    "helperd",
		Command: []string{"sluice-helperd", "--node-name=$(NODE_NAME)", "--no-such-flag=1", "--uplink=$(MISSING_VAR)"},
		Env: []corev1.EnvVar{
			{Name: "NODE_NAME"},
			{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "absent-key"}}},
		},
	}}
	cm := &corev1.ConfigMap{Data: map[string]string{"resync": "2s", "cni-install.bogus": "", "unread": ""}}
	cm.Name = "cfg"
	known := flagSets{
		"sluice-helperd":     helperdFlags(),
		"sluice-cni-install": func(n string) bool { return n == "watch" },
	}
	got := strings.Join(checkFlags(ds, cm, known), "\n")
	for _, want := range []string{
		"--no-such-flag is not a flag of sluice-helperd",
		"$(MISSING_VAR)",
		`missing ConfigMap key "absent-key"`,
		`"cni-install.bogus": --bogus is not a flag of sluice-cni-install`,
		`"unread": --unread is not a flag of sluice-helperd`,
		`"resync" is read by no container`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, "node-name") {
		t.Errorf("a known flag was reported:\n%s", got)
	}
}

// The ConfigMap's values, expanded into the helper's args as the kubelet
// does, parse and pass the helper's validation: valid names are not enough.
func TestManifestValuesValidate(t *testing.T) {
	root := repoRoot(t)
	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	decodeFile(t, filepath.Join(root, "install", "daemonset.yaml"), &ds)
	decodeFile(t, filepath.Join(root, "install", "configmap.yaml"), &cm)
	var helper *corev1.Container
	for i, c := range ds.Spec.Template.Spec.Containers {
		if len(c.Command) > 0 && c.Command[0] == "sluice-helperd" {
			helper = &ds.Spec.Template.Spec.Containers[i]
		}
	}
	if helper == nil {
		t.Fatal("no container runs sluice-helperd")
	}
	env := map[string]string{}
	for _, e := range helper.Env {
		switch r := e.ValueFrom; {
		case r != nil && r.ConfigMapKeyRef != nil:
			env[e.Name] = cm.Data[r.ConfigMapKeyRef.Key]
		case r != nil && r.FieldRef != nil && r.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = "node-a"
		default:
			env[e.Name] = e.Value
		}
	}
	var args []string
	for _, a := range slices.Concat(helper.Command[1:], helper.Args) {
		args = append(args, varRef.ReplaceAllStringFunc(a, func(ref string) string {
			return env[varRef.FindStringSubmatch(ref)[1]]
		}))
	}
	fs := flag.NewFlagSet("sluice-helperd", flag.ContinueOnError)
	cfg := config.Bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the manifests' configuration does not validate:\n%v\nargs: %q", err, args)
	}
	if cfg.NodeName != "node-a" || len(cfg.ClusterCIDRs) == 0 || cfg.GossipKeyFile != "/etc/sluice/gossip/key" {
		t.Errorf("args did not reach the config: %+v", cfg)
	}
}
