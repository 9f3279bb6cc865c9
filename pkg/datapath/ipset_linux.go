package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// ipsetRunner is the ipset backend: one `ipset save` to read, one
// `ipset restore -exist` per batch of writes.
type ipsetRunner interface {
	Save() ([]byte, error)
	Restore(script []byte) error
}

type execIPSet struct{}

func (execIPSet) Save() ([]byte, error) {
	out, err := exec.Command("ipset", "save").Output()
	if err != nil {
		return nil, fmt.Errorf("ipset save: %w", err)
	}
	return out, nil
}

func (execIPSet) Restore(script []byte) error {
	cmd := exec.Command("ipset", "restore", "-exist")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ipset restore: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// maxElem leaves room for every Pod of a large cluster in one set.
const maxElem = 262144

// parseIPSetSave returns the SLUICE-* sets from `ipset save` output.
func parseIPSetSave(out []byte) map[string]*IPSet {
	sets := map[string]*IPSet{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasPrefix(f[1], setPrefix) {
			continue
		}
		switch f[0] {
		case "create":
			sets[f[1]] = &IPSet{Name: f[1], Type: f[2]}
		case "add":
			if s := sets[f[1]]; s != nil {
				s.Members = append(s.Members, f[2])
			}
		}
	}
	return sets
}

// ipsetScripts diffs want against the kernel's sets. adds creates sets and
// adds members (and replaces a set of the wrong type by a swap); dels
// removes stale members and destroys stale sets, to run after iptables
// stopped referencing them.
func ipsetScripts(have map[string]*IPSet, want []IPSet) (adds, dels []byte) {
	var a, d strings.Builder
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w.Name] = true
		h := have[w.Name]
		if h != nil && h.Type != w.Type {
			tmp := "SLUICE-TMP"
			fmt.Fprintf(&a, "create %s %s family inet maxelem %d\nflush %s\n", tmp, w.Type, maxElem, tmp)
			for _, m := range w.Members {
				fmt.Fprintf(&a, "add %s %s\n", tmp, m)
			}
			fmt.Fprintf(&a, "swap %s %s\ndestroy %s\n", tmp, w.Name, tmp)
			continue
		}
		if h == nil {
			fmt.Fprintf(&a, "create %s %s family inet maxelem %d\n", w.Name, w.Type, maxElem)
			h = &IPSet{}
		}
		haveM, wantM := toSet(h.Members), toSet(w.Members)
		for _, m := range w.Members {
			if !haveM[m] {
				fmt.Fprintf(&a, "add %s %s\n", w.Name, m)
			}
		}
		for _, m := range h.Members {
			if !wantM[m] {
				fmt.Fprintf(&d, "del %s %s\n", w.Name, m)
			}
		}
	}
	for _, name := range sortedSetNames(have) {
		if !wanted[name] {
			fmt.Fprintf(&d, "destroy %s\n", name)
		}
	}
	return bytesOrNil(a.String()), bytesOrNil(d.String())
}

func sortedSetNames(m map[string]*IPSet) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func (d *Datapath) restoreIPSet(script []byte) error {
	if script == nil {
		return nil
	}
	d.writes++
	return d.ipset.Restore(script)
}

// removeIPSets destroys every SLUICE-* set (after the chains are gone).
func (d *Datapath) removeIPSets() error {
	out, err := d.ipset.Save()
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, name := range sortedSetNames(parseIPSetSave(out)) {
		fmt.Fprintf(&b, "destroy %s\n", name)
	}
	return errors.Join(d.restoreIPSet(bytesOrNil(b.String())))
}

func toSet(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}
