package datapath

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The pure part of the iptables backend: parsing iptables-save, and the
// restore scripts that take a table from what it holds to what Sluice
// wants, so their tests run on any OS. iptables_linux.go runs them.

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

// parseIPTablesSaveAll splits the output of an iptables-save of every
// table ("*<table>" ... "COMMIT" blocks) into its tables.
func parseIPTablesSaveAll(out []byte) map[string]tableRules {
	all := map[string]tableRules{}
	var table string
	var block []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table, block = line[1:], nil
		case line == "COMMIT" && table != "":
			all[table] = parseIPTablesSave([]byte(strings.Join(block, "\n")))
			table = ""
		case table != "":
			block = append(block, line)
		}
	}
	return all
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

// afterScript is what table holds once iptablesScript(have, table, want)
// is restored: the Sluice chains of want as they are, and each jump once,
// first or (Jump.Last) where it was or appended.
func afterScript(have tableRules, table string, want map[string][]string) tableRules {
	out := make(tableRules, len(have)+len(want))
	for chain, rules := range have {
		out[chain] = slices.Clone(rules)
	}
	for chain, rules := range want {
		out[chain] = slices.Clone(rules)
	}
	for _, j := range Jumps {
		if j.Table != table {
			continue
		}
		from, jump := have[j.From], "-j "+j.To
		if n := count(from, jump); n == 1 && (j.Last || from[0] == jump) {
			continue
		}
		rules := slices.DeleteFunc(out[j.From], func(r string) bool { return r == jump })
		if j.Last {
			out[j.From] = append(rules, jump)
		} else {
			out[j.From] = append([]string{jump}, rules...)
		}
	}
	return out
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

func chainsEqual(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}
