// Package iptbackend picks the iptables backend (nft or legacy) that the
// Node already uses, so that Sluice's rules land in the same kernel
// subsystem as kube-proxy's and the primary CNI's. Rules written through
// the other backend would still run, but their order against the Node's
// rules (SNAT before the CNI's MASQUERADE) would no longer be ours to
// choose: an nft-inserted rule runs after every legacy rule and vice versa.
//
// The heuristic is kube-proxy's, from kubernetes-sigs/iptables-wrappers
// (the wrapper in kube-proxy's image):
//  1. kubelet (1.17+) creates KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY in
//     the mangle table with the backend it uses; look in nft first, then in
//     legacy;
//  2. without those chains, the backend holding more rules wins (the older
//     wrapper's count of "-A" lines); a tie, including an empty Node, picks
//     nft, the default of Debian, RHEL and the current wrapper.
//
// ipset is one kernel subsystem whichever backend matches on it, so only
// the iptables binaries change.
package iptbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"time"
)

// Mode is an iptables backend.
type Mode string

const (
	NFT    Mode = "nft"
	Legacy Mode = "legacy"
)

// Backend is the chosen mode and why, for the startup log.
type Backend struct {
	Mode   Mode
	Reason string
}

// IPTables is the binary to run for IPv4 rules, e.g. "iptables-nft"; pass
// it to go-iptables as iptables.Path(b.IPTables()).
func (b Backend) IPTables() string { return "iptables-" + string(b.Mode) }

// IPTablesSave and IPTablesRestore are the matching save and restore
// binaries.
func (b Backend) IPTablesSave() string    { return "iptables-" + string(b.Mode) + "-save" }
func (b Backend) IPTablesRestore() string { return "iptables-" + string(b.Mode) + "-restore" }

// IP6Tables, IP6TablesSave and IP6TablesRestore are the IPv6 binaries.
func (b Backend) IP6Tables() string        { return "ip6tables-" + string(b.Mode) }
func (b Backend) IP6TablesSave() string    { return "ip6tables-" + string(b.Mode) + "-save" }
func (b Backend) IP6TablesRestore() string { return "ip6tables-" + string(b.Mode) + "-restore" }

// Saves is what each backend's save commands printed (IPv4 and IPv6
// concatenated), and whether its IPv4 save ran at all, which tells whether
// that backend is installed and usable.
type Saves struct {
	NFT, Legacy     []byte
	NFTOK, LegacyOK bool
}

// kubeletChains are the chains kubelet creates, in the backend it uses, so
// that wrappers can tell (KEP-3178 keeps KUBE-IPTABLES-HINT for this).
var kubeletChains = regexp.MustCompile(`(?m)^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)`)

// Decide is the pure decision over captured save output.
func Decide(s Saves) (Backend, error) {
	switch {
	case !s.NFTOK && !s.LegacyOK:
		return Backend{}, errors.New("neither iptables-nft-save nor iptables-legacy-save ran")
	case !s.LegacyOK:
		return Backend{NFT, "only the nft backend is usable"}, nil
	case !s.NFTOK:
		return Backend{Legacy, "only the legacy backend is usable"}, nil
	case kubeletChains.Match(s.NFT):
		return Backend{NFT, "kubelet's hint chains are in nft"}, nil
	case kubeletChains.Match(s.Legacy):
		return Backend{Legacy, "kubelet's hint chains are in legacy"}, nil
	}
	n, l := countRules(s.NFT), countRules(s.Legacy)
	if l > n {
		return Backend{Legacy, fmt.Sprintf("legacy holds more rules (%d > %d)", l, n)}, nil
	}
	return Backend{NFT, fmt.Sprintf("nft holds as many rules or more (%d >= %d)", n, l)}, nil
}

// countRules counts "-A chain ..." lines, as the wrapper's grep '^-' does.
func countRules(save []byte) int {
	n := 0
	for _, line := range bytes.Split(save, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("-")) {
			n++
		}
	}
	return n
}

// Runner runs a command and returns its stdout; Exec is the real one and
// tests run commands inside a test namespace.
type Runner func(name string, args ...string) ([]byte, error)

// saveTimeout bounds each save: iptables-nft-save can hang on kernels with
// a broken nf_tables (the wrapper uses `timeout 5` for the same reason).
const saveTimeout = 5 * time.Second

// Exec runs the command on this host with saveTimeout.
func Exec(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).Output()
}

// Detect runs each backend's save commands and decides. The legacy save
// is run without -t: naming a table would make the legacy kernel module
// create it, which would itself tip a later decision towards legacy.
func Detect(run Runner) (Backend, error) {
	var s Saves
	var errs []error
	out, err := run("iptables-nft-save")
	s.NFT, s.NFTOK = out, err == nil
	errs = append(errs, wrapErr("iptables-nft-save", err))
	out, err = run("iptables-legacy-save")
	s.Legacy, s.LegacyOK = out, err == nil
	errs = append(errs, wrapErr("iptables-legacy-save", err))
	// IPv6 only adds evidence; a Node without IPv6 tables is fine.
	if out, err := run("ip6tables-nft-save"); err == nil && s.NFTOK {
		s.NFT = append(append([]byte(nil), s.NFT...), out...)
	}
	if out, err := run("ip6tables-legacy-save"); err == nil && s.LegacyOK {
		s.Legacy = append(append([]byte(nil), s.Legacy...), out...)
	}
	b, err := Decide(s)
	if err != nil {
		return Backend{}, fmt.Errorf("detect iptables backend: %w", errors.Join(append([]error{err}, errs...)...))
	}
	return b, nil
}

func wrapErr(cmd string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", cmd, err)
}
