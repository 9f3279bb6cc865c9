package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/sluicenet/sluice/pkg/iptbackend"
)

// iptablesRunner is the iptables backend: iptables-save to read (one
// table, or every table when table is ""), iptables-restore --noflush to
// write a script of one or more tables (named in errors by tables), so a
// table's Sluice chains change atomically and a reconcile runs a constant
// number of processes however many Egresses exist.
type iptablesRunner interface {
	Save(table string) ([]byte, error)
	Restore(tables string, script []byte) error
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
	var args []string
	if table != "" {
		args = []string{"-t", table}
	}
	cmd := exec.Command(e.save, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", e.save, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

func (e *execIPTables) Restore(tables string, script []byte) error {
	cmd := exec.Command(e.restore, "--noflush", "-w", "5")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s table %s: %w: %s", e.restore, tables, err, bytes.TrimSpace(out))
	}
	return nil
}

func (d *Datapath) readTable(table string) (tableRules, error) {
	out, err := d.ipt.Save(table)
	if err != nil {
		return nil, err
	}
	return parseIPTablesSave(out), nil
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
//
// A failover changes two or three tables, and each iptables process costs
// 10–15 ms on a busy Node, so the tables are read with one iptables-save and
// each pass is one iptables-restore of every table it changes: three
// processes, where one save and restore per table and pass, with a read
// back between the passes, took eight (about 100 ms of a failover). What a
// pass leaves is computed (afterScript), not read back. If a combined
// restore fails, each table is read and written on its own, so one table
// that cannot be written does not hold back the others.
func (d *Datapath) syncIPTables(want, installed Chains) error {
	var stale []string
	for _, table := range tables {
		if installed == nil || !chainsEqual(installed[table], want[table]) {
			stale = append(stale, table)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	haves, err := d.readTables(stale)
	if err != nil {
		return err
	}
	var changed []string
	for _, table := range stale {
		if iptablesScript(haves[table], table, want[table]) != nil {
			changed = append(changed, table)
		}
	}
	if len(changed) > 1 {
		union := Chains{}
		for _, table := range changed {
			union[table] = unionChains(haves[table], want[table])
		}
		if err := d.restoreTables(changed, haves, union); err != nil {
			return d.syncEachTable(changed, want, err)
		}
	}
	if err := d.restoreTables(changed, haves, want); err != nil {
		return d.syncEachTable(changed, want, err)
	}
	return nil
}

// readTables reads the named tables, with one iptables-save for all of them
// when there are several. A table the kernel does not have yet is empty.
func (d *Datapath) readTables(names []string) (map[string]tableRules, error) {
	if len(names) == 1 {
		have, err := d.readTable(names[0])
		return map[string]tableRules{names[0]: have}, err
	}
	out, err := d.ipt.Save("")
	if err != nil {
		return nil, err
	}
	all := parseIPTablesSaveAll(out)
	haves := make(map[string]tableRules, len(names))
	for _, table := range names {
		if haves[table] = all[table]; haves[table] == nil {
			haves[table] = tableRules{}
		}
	}
	return haves, nil
}

// restoreTables writes, in one iptables-restore, what takes each of the
// named tables from haves to want, and records in haves what the tables
// then hold.
func (d *Datapath) restoreTables(names []string, haves map[string]tableRules, want Chains) error {
	var script []byte
	for _, table := range names {
		script = append(script, iptablesScript(haves[table], table, want[table])...)
	}
	if script == nil {
		return nil
	}
	d.writes++
	if err := d.ipt.Restore(strings.Join(names, ","), script); err != nil {
		return err
	}
	for _, table := range names {
		haves[table] = afterScript(haves[table], table, want[table])
	}
	return nil
}

// syncEachTable is syncIPTables' way out when a combined restore failed
// (cause): every table read and written on its own.
func (d *Datapath) syncEachTable(names []string, want Chains, cause error) error {
	d.log.Warn("combined iptables-restore failed; writing each table on its own", "tables", names, "err", cause)
	return d.eachTable(names, func(table string, have tableRules) error {
		if script := iptablesScript(have, table, want[table]); script != nil {
			d.writes++
			return d.ipt.Restore(table, script)
		}
		return nil
	})
}

// eachTable reads each of names and hands it to f. A table that cannot be
// read or that f fails on does not stop the others; the errors are joined.
func (d *Datapath) eachTable(names []string, f func(table string, have tableRules) error) error {
	var errs []error
	for _, table := range names {
		have, err := d.readTable(table)
		if err == nil {
			err = f(table, have)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeIPTables deletes Sluice's jumps and every SLUICE-* chain.
func (d *Datapath) removeIPTables() error {
	return d.eachTable(tables, func(table string, have tableRules) error {
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
			return nil
		}
		d.writes++
		return d.ipt.Restore(table, []byte("*"+table+"\n"+b.String()+"COMMIT\n"))
	})
}
