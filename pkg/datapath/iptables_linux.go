package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// iptablesRunner is the iptables backend: reads through go-iptables, writes
// as one iptables-restore --noflush per table, so a table's Sluice chains
// change atomically and O(1) processes run however many Egresses exist.
type iptablesRunner interface {
	ListChains(table string) ([]string, error)
	List(table, chain string) ([]string, error)
	Restore(table string, script []byte) error
}

// execIPTables uses the iptables binaries on PATH, so the helper follows the
// backend (nft or legacy) the node already uses.
type execIPTables struct{ *iptables.IPTables }

func newExecIPTables() (*execIPTables, error) {
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("init iptables: %w", err)
	}
	return &execIPTables{ipt}, nil
}

func (e *execIPTables) Restore(table string, script []byte) error {
	cmd := exec.Command("iptables-restore", "--noflush", "-w", "5")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore table %s: %w: %s", table, err, bytes.TrimSpace(out))
	}
	return nil
}

// chainRules returns a chain's rules as specs without "-A <chain> ".
func chainRules(r iptablesRunner, table, chain string) ([]string, error) {
	lines, err := r.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("list %s/%s: %w", table, chain, err)
	}
	var out []string
	prefix := "-A " + chain + " "
	for _, l := range lines {
		if s, ok := strings.CutPrefix(l, prefix); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// iptablesScript builds, for one table, the restore script that makes the
// Sluice chains equal want and puts each jump first exactly once. It returns
// nil when the table already matches.
func iptablesScript(r iptablesRunner, table string, want map[string][]string) ([]byte, error) {
	existing, err := r.ListChains(table)
	if err != nil {
		return nil, fmt.Errorf("list chains of %s: %w", table, err)
	}
	var b strings.Builder
	for _, chain := range sortedChainNames(want) {
		if slices.Contains(existing, chain) {
			have, err := chainRules(r, table, chain)
			if err != nil {
				return nil, err
			}
			if slices.Equal(have, want[chain]) {
				continue
			}
		}
		// Declaring a chain in a --noflush restore creates or flushes it.
		fmt.Fprintf(&b, ":%s - [0:0]\n", chain)
		for _, rule := range want[chain] {
			fmt.Fprintf(&b, "-A %s %s\n", chain, rule)
		}
	}
	for _, j := range Jumps {
		if j.Table != table {
			continue
		}
		have, err := chainRules(r, table, j.From)
		if err != nil {
			return nil, err
		}
		jump := "-j " + j.To
		n := count(have, jump)
		if n == 1 && have[0] == jump {
			continue
		}
		for range n {
			fmt.Fprintf(&b, "-D %s %s\n", j.From, jump)
		}
		fmt.Fprintf(&b, "-I %s 1 %s\n", j.From, jump)
	}
	if b.Len() == 0 {
		return nil, nil
	}
	return []byte("*" + table + "\n" + b.String() + "COMMIT\n"), nil
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func sortedChainNames(m map[string][]string) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// syncIPTables makes every Sluice chain and jump match want.
func (d *Datapath) syncIPTables(want Chains) error {
	var errs []error
	for _, table := range []string{"mangle", "nat"} {
		script, err := iptablesScript(d.ipt, table, want[table])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if script == nil {
			continue
		}
		d.writes++
		if err := d.ipt.Restore(table, script); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeIPTables deletes Sluice's jumps and every SLUICE-* chain.
func (d *Datapath) removeIPTables() error {
	var errs []error
	for _, table := range []string{"mangle", "nat"} {
		chains, err := d.ipt.ListChains(table)
		if err != nil {
			errs = append(errs, fmt.Errorf("list chains of %s: %w", table, err))
			continue
		}
		var b strings.Builder
		for _, from := range chains {
			if strings.HasPrefix(from, setPrefix) {
				continue
			}
			have, err := chainRules(d.ipt, table, from)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, r := range have {
				if to, ok := strings.CutPrefix(r, "-j "); ok && strings.HasPrefix(to, setPrefix) && !strings.Contains(to, " ") {
					fmt.Fprintf(&b, "-D %s %s\n", from, r)
				}
			}
		}
		var ours []string
		for _, c := range chains {
			if strings.HasPrefix(c, setPrefix) {
				ours = append(ours, c)
				fmt.Fprintf(&b, "-F %s\n", c)
			}
		}
		for _, c := range ours {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		if b.Len() == 0 {
			continue
		}
		d.writes++
		if err := d.ipt.Restore(table, []byte("*"+table+"\n"+b.String()+"COMMIT\n")); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
