package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/sluicenet/sluice/pkg/iptbackend"
)

// iptablesRunner is the iptables backend: one iptables-save per table to
// read, one iptables-restore --noflush per table to write, so a table's
// Sluice chains change atomically and a reconcile runs a constant number of
// processes however many Egresses exist.
type iptablesRunner interface {
	Save(table string) ([]byte, error)
	Restore(table string, script []byte) error
}

// execIPTables runs the iptables binaries of the backend the Node already
// uses (Config.IPTables, chosen by package iptbackend the way kube-proxy's
// wrapper does; the zero value means plain "iptables" on PATH).
// go-iptables provides the counters (StructuredStats).
type execIPTables struct {
	*iptables.IPTables
	save, restore string
}

func newExecIPTables(b iptbackend.Backend) (*execIPTables, error) {
	e := &execIPTables{save: "iptables-save", restore: "iptables-restore"}
	var ipt *iptables.IPTables
	var err error
	if b.Mode != "" {
		e.save, e.restore = b.IPTablesSave(), b.IPTablesRestore()
		ipt, err = iptables.New(iptables.Path(b.IPTables()))
	} else {
		ipt, err = iptables.New()
	}
	if err != nil {
		return nil, fmt.Errorf("init iptables: %w", err)
	}
	e.IPTables = ipt
	return e, nil
}

func (e *execIPTables) Save(table string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(e.save, "-t", table)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -t %s: %w: %s", e.save, table, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

func (e *execIPTables) Restore(table string, script []byte) error {
	cmd := exec.Command(e.restore, "--noflush", "-w", "5")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s table %s: %w: %s", e.restore, table, err, bytes.TrimSpace(out))
	}
	return nil
}

// tableRules is one table as iptables-save prints it: every chain, with its
// rules as specs without "-A <chain> ".
type tableRules map[string][]string

func parseIPTablesSave(out []byte) tableRules {
	t := tableRules{}
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := t[name]; !ok {
				t[name] = nil
			}
		case strings.HasPrefix(line, "-A "):
			if chain, spec, ok := strings.Cut(line[3:], " "); ok && chain != "" && spec != "" {
				t[chain] = append(t[chain], spec)
			}
		}
	}
	return t
}

func (d *Datapath) readTable(table string) (tableRules, error) {
	out, err := d.ipt.Save(table)
	if err != nil {
		return nil, err
	}
	return parseIPTablesSave(out), nil
}

// iptablesScript builds, for one table, the restore script that makes the
// Sluice chains equal want and puts each jump first exactly once. It returns
// nil when the table already matches.
func iptablesScript(have tableRules, table string, want map[string][]string) []byte {
	var b strings.Builder
	for _, chain := range sortedChainNames(want) {
		if rules, ok := have[chain]; ok && slices.Equal(rules, want[chain]) {
			continue
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
		from := have[j.From]
		jump := "-j " + j.To
		n := count(from, jump)
		if n == 1 && (j.Last || from[0] == jump) {
			continue
		}
		for range n {
			fmt.Fprintf(&b, "-D %s %s\n", j.From, jump)
		}
		if j.Last {
			fmt.Fprintf(&b, "-A %s %s\n", j.From, jump)
		} else {
			fmt.Fprintf(&b, "-I %s 1 %s\n", j.From, jump)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return []byte("*" + table + "\n" + b.String() + "COMMIT\n")
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

// syncIPTables makes every Sluice chain and jump match want. A table whose
// chains equal those in installed (the record of the last Apply, nil when
// unknown) is not read back.
//
// One restore is atomic for its table, but the mark (mangle) and the SNAT
// (nat) of an Egress live in two tables. When an Egress moves to or from
// this Node both change, and writing one table and then the other would
// leave a moment where a Pod's packet is neither marked into the tunnel nor
// SNATed here, and leaves with the Node IP. So when both tables change, a
// first pass adds the new rules next to the old ones in both, and only the
// second pass removes the old ones: add before delete, across tables.
func (d *Datapath) syncIPTables(want, installed Chains) error {
	var errs []error
	haves := map[string]tableRules{}
	for _, table := range tables {
		if installed != nil && chainsEqual(installed[table], want[table]) {
			continue
		}
		have, err := d.readTable(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if iptablesScript(have, table, want[table]) != nil {
			haves[table] = have
		}
	}
	if len(haves) > 1 {
		for _, table := range tables {
			union := unionChains(haves[table], want[table])
			if script := iptablesScript(haves[table], table, union); script != nil {
				d.writes++
				if err := d.ipt.Restore(table, script); err != nil {
					errs = append(errs, err)
				}
			}
			have, err := d.readTable(table)
			if err != nil {
				errs = append(errs, err)
				delete(haves, table)
				continue
			}
			haves[table] = have
		}
	}
	for _, table := range tables {
		have, ok := haves[table]
		if !ok {
			continue
		}
		script := iptablesScript(have, table, want[table])
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

// unionChains is want with, in each chain, the rules have has and want
// lacks kept in front: the old rules go on matching until the next pass
// removes them, and the new ones already match.
func unionChains(have tableRules, want map[string][]string) map[string][]string {
	out := make(map[string][]string, len(want))
	for chain, rules := range want {
		var merged []string
		for _, r := range have[chain] {
			if !slices.Contains(rules, r) {
				merged = append(merged, r)
			}
		}
		out[chain] = append(merged, rules...)
	}
	return out
}

// removeIPTables deletes Sluice's jumps and every SLUICE-* chain.
func (d *Datapath) removeIPTables() error {
	var errs []error
	for _, table := range tables {
		have, err := d.readTable(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var b strings.Builder
		for _, from := range sortedChainNames(have) {
			if strings.HasPrefix(from, setPrefix) {
				continue
			}
			for _, r := range have[from] {
				if to, ok := strings.CutPrefix(r, "-j "); ok && strings.HasPrefix(to, setPrefix) && !strings.Contains(to, " ") {
					fmt.Fprintf(&b, "-D %s %s\n", from, r)
				}
			}
		}
		var ours []string
		for _, c := range sortedChainNames(have) {
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

func chainsEqual(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}
