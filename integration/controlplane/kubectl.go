package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/sluicenet/sluice/integration/binaries"
)

// Kubectl runs the built kubectl against this control plane and returns
// its stdout. The error carries stderr, where kubectl puts its messages.
func (cp *ControlPlane) Kubectl(args ...string) (string, error) {
	return cp.KubectlInput("", args...)
}

// KubectlInput is Kubectl with stdin (for `apply -f -`).
func (cp *ControlPlane) KubectlInput(stdin string, args ...string) (string, error) {
	full := append([]string{"--kubeconfig=" + cp.Kubeconfig, "--cache-dir=" + cp.l.kubectlCache()}, args...)
	cmd := command(cp.opts.NetNS, cp.kubectl, full)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// InstallCRDs applies install/crds/ and waits until every CRD is
// Established.
func (cp *ControlPlane) InstallCRDs(ctx context.Context) error {
	root, err := binaries.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "install", "crds")
	if _, err := cp.Kubectl("apply", "--server-side", "-f", dir); err != nil {
		return fmt.Errorf("install crds: %w", err)
	}
	if _, err := cp.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", dir); err != nil {
		return fmt.Errorf("wait for crds: %w", err)
	}
	return ctx.Err()
}
