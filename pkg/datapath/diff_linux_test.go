package datapath

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// fakeIPT is an iptables backend over canned iptables-save output that
// records every save and restore script; a restore of more than one table
// fails when failCombined is set.
type fakeIPT struct {
	tables       map[string]string
	saves        []string
	restores     []string
	failCombined bool
}

func (f *fakeIPT) Save(table string) ([]byte, error) {
	f.saves = append(f.saves, table)
	if table != "" {
		return []byte(f.tables[table]), nil
	}
	var all string
	for _, name := range tables {
		all += f.tables[name]
	}
	return []byte(all), nil
}

func (f *fakeIPT) Restore(tables string, s []byte) error {
	f.restores = append(f.restores, string(s))
	if f.failCombined && strings.Contains(tables, ",") {
		return errors.New("combined restore refused")
	}
	return nil
}

// saveOf renders chains as iptables-save would.
func saveOf(table string, builtins []string, c map[string][]string) string {
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for _, n := range builtins {
		b.WriteString(":" + n + " ACCEPT [0:0]\n")
	}
	for _, n := range sortedChainNames(c) {
		if !strings.HasPrefix(n, "SLUICE-") {
			continue
		}
		b.WriteString(":" + n + " - [0:0]\n")
	}
	for _, n := range sortedChainNames(c) {
		for _, r := range c[n] {
			b.WriteString("-A " + n + " " + r + "\n")
		}
	}
	return b.String() + "COMMIT\n"
}

func TestSyncIPTables(t *testing.T) {
	c := testConfig()
	want := BuildChains(c, twoEgresses())
	inSync := func() map[string]string {
		mangle := map[string][]string{"PREROUTING": {"-j SLUICE-PREROUTING"}, "FORWARD": {"-j SLUICE-FORWARD"}}
		for k, v := range want["mangle"] {
			mangle[k] = v
		}
		nat := map[string][]string{"POSTROUTING": {"-j SLUICE-POSTROUTING", "-s 10.244.1.0/24 -j MASQUERADE"}}
		for k, v := range want["nat"] {
			nat[k] = v
		}
		// Someone else's rule after Sluice's last-position jump is fine.
		filter := map[string][]string{
			"INPUT":   {"-j SLUICE-GUARD", "-p tcp -m tcp --dport 22 -j ACCEPT"},
			"FORWARD": {"-j SLUICE-GUARD", "-s 10.244.1.2 -j ACCEPT", "-j SLUICE-FWD-ACCEPT", "-s 192.0.2.99 -j DROP"},
		}
		for k, v := range want["filter"] {
			filter[k] = v
		}
		return map[string]string{
			"mangle": saveOf("mangle", []string{"PREROUTING", "FORWARD"}, mangle),
			"nat":    saveOf("nat", []string{"POSTROUTING"}, nat),
			"filter": saveOf("filter", []string{"INPUT", "FORWARD"}, filter),
		}
	}
	for _, tc := range []struct {
		name    string
		tables  map[string]string
		restore []string // substrings of the restore scripts, in order; nil = no write
	}{
		{"in sync: no write", inSync(), nil},
		{"fresh node", map[string]string{"mangle": "*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", "nat": ""}, []string{
			":SLUICE-FORWARD - [0:0]\n-A SLUICE-FORWARD -o sluice.vxlan",
			"-I PREROUTING 1 -j SLUICE-PREROUTING\n-I FORWARD 1 -j SLUICE-FORWARD\nCOMMIT",
			"*nat\n:SLUICE-POSTROUTING - [0:0]\n-A SLUICE-POSTROUTING -o sluice.vxlan -j ACCEPT\n",
			"*filter\n:SLUICE-FWD-ACCEPT - [0:0]\n-A SLUICE-FWD-ACCEPT -i sluice.vxlan -j ACCEPT\n-A SLUICE-FWD-ACCEPT -o sluice.vxlan -j ACCEPT\n:SLUICE-GUARD - [0:0]\n",
			"-A FORWARD -j SLUICE-FWD-ACCEPT\n-I INPUT 1 -j SLUICE-GUARD\n-I FORWARD 1 -j SLUICE-GUARD\nCOMMIT",
		}},
		{"guard pushed down in INPUT: moved back to the top", func() map[string]string {
			m := inSync()
			m["filter"] = strings.Replace(m["filter"], "-A INPUT -j SLUICE-GUARD\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n",
				"-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -j SLUICE-GUARD\n", 1)
			return m
		}(), []string{"*filter\n-D INPUT -j SLUICE-GUARD\n-I INPUT 1 -j SLUICE-GUARD\nCOMMIT\n"}},
		{"filter jump duplicated: deleted and appended once", func() map[string]string {
			m := inSync()
			m["filter"] = strings.Replace(m["filter"], "-A FORWARD -s 10.244.1.2 -j ACCEPT\n",
				"-A FORWARD -j SLUICE-FWD-ACCEPT\n-A FORWARD -s 10.244.1.2 -j ACCEPT\n", 1)
			return m
		}(), []string{"*filter\n-D FORWARD -j SLUICE-FWD-ACCEPT\n-D FORWARD -j SLUICE-FWD-ACCEPT\n-A FORWARD -j SLUICE-FWD-ACCEPT\nCOMMIT\n"}},
		{"jump pushed down and duplicated", func() map[string]string {
			m := inSync()
			m["nat"] = strings.Replace(m["nat"], "-A POSTROUTING -j SLUICE-POSTROUTING\n",
				"-A POSTROUTING -s 10.244.2.0/24 -j MASQUERADE\n-A POSTROUTING -j SLUICE-POSTROUTING\n-A POSTROUTING -j SLUICE-POSTROUTING\n", 1)
			return m
		}(), []string{"*nat\n-D POSTROUTING -j SLUICE-POSTROUTING\n-D POSTROUTING -j SLUICE-POSTROUTING\n-I POSTROUTING 1 -j SLUICE-POSTROUTING\nCOMMIT\n"}},
		{"one rule deleted: only its chain rewritten", func() map[string]string {
			m := inSync()
			m["mangle"] = strings.Replace(m["mangle"], "-A SLUICE-FORWARD -o sluice.vxlan -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu\n", "", 1)
			return m
		}(), []string{"*mangle\n:SLUICE-FORWARD - [0:0]\n-A SLUICE-FORWARD -o sluice.vxlan -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu\nCOMMIT\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeIPT{tables: tc.tables}
			d := &Datapath{cfg: c, ipt: f}
			if err := d.syncIPTables(want, nil); err != nil {
				t.Fatal(err)
			}
			all := strings.Join(f.restores, "")
			if tc.restore == nil && (len(f.restores) != 0 || d.writes != 0) {
				t.Fatalf("wrote %q", f.restores)
			}
			pos := 0
			for _, s := range tc.restore {
				i := strings.Index(all[pos:], s)
				if i < 0 {
					t.Fatalf("restore scripts lack %q (after %d):\n%s", s, pos, all)
				}
				pos += i + len(s)
			}
			if d.writes != len(f.restores) {
				t.Errorf("writes %d, restores %d", d.writes, len(f.restores))
			}
		})
	}
}

// An Egress moving to this Node changes mangle, nat and filter together:
// one iptables-save reads them, one restore adds the new rules next to the
// old in every table, and a second restore removes the old ones, with
// nothing read back between the passes.
func TestSyncIPTablesMoveInThreeProcesses(t *testing.T) {
	c := testConfig()
	before, after := BuildChains(c, twoEgresses()), BuildChains(c, moved(twoEgresses()))
	tables := map[string]string{}
	for table, jumps := range map[string][]string{"mangle": {"PREROUTING", "FORWARD"}, "nat": {"POSTROUTING"}, "filter": {"INPUT", "FORWARD"}} {
		chains := map[string][]string{}
		for k, v := range before[table] {
			chains[k] = v
		}
		for _, j := range Jumps {
			switch {
			case j.Table != table:
			case j.Last:
				chains[j.From] = append(chains[j.From], "-j "+j.To)
			default:
				chains[j.From] = append([]string{"-j " + j.To}, chains[j.From]...)
			}
		}
		tables[table] = saveOf(table, jumps, chains)
	}
	for _, tc := range []struct {
		name         string
		failCombined bool
		saves        []string
		restores     int
	}{
		{"combined", false, []string{""}, 2},
		{"combined refused: each table on its own", true, []string{"", "mangle", "nat", "filter"}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeIPT{tables: tables, failCombined: tc.failCombined}
			d := &Datapath{cfg: c, ipt: f, log: slog.New(slog.DiscardHandler)}
			if err := d.syncIPTables(after, before); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.saves, tc.saves) || len(f.restores) != tc.restores {
				t.Fatalf("saves %q, %d restores, want %q and %d:\n%s", f.saves, len(f.restores), tc.saves, tc.restores, strings.Join(f.restores, "---\n"))
			}
			if tc.failCombined {
				return
			}
			first, second := f.restores[0], f.restores[1]
			// Only mangle loses a rule (staging's mark), so only it is in the
			// second pass.
			if !strings.Contains(first, "*mangle\n") || !strings.Contains(first, "*nat\n") || !strings.Contains(first, "*filter\n") ||
				!strings.HasPrefix(second, "*mangle\n") || strings.Count(second, "COMMIT") != 1 || strings.Contains(second, "sluice:ip=203.0.113.20") {
				t.Fatalf("the first pass should write all three tables, the second mangle alone without staging's mark:\n%s---\n%s", first, second)
			}
			// The first pass keeps every old rule of a chain it rewrites and adds
			// every new one.
			for _, table := range []string{"mangle", "nat"} {
				for chain, rules := range after[table] {
					if slices.Equal(rules, before[table][chain]) {
						continue // not rewritten
					}
					for _, r := range append(slices.Clone(before[table][chain]), rules...) {
						if !strings.Contains(first, "-A "+chain+" "+r+"\n") {
							t.Errorf("first pass lacks %s %s", chain, r)
						}
					}
				}
			}
		})
	}
}

func TestRemoveIPTables(t *testing.T) {
	f := &fakeIPT{tables: map[string]string{
		"nat": "*nat\n:POSTROUTING ACCEPT [0:0]\n:SLUICE-POSTROUTING - [0:0]\n:KUBE-X - [0:0]\n" +
			"-A POSTROUTING -j KUBE-X\n-A POSTROUTING -j SLUICE-POSTROUTING\n-A SLUICE-POSTROUTING -o sluice.vxlan -j ACCEPT\nCOMMIT\n",
	}}
	d := &Datapath{cfg: testConfig(), ipt: f}
	if err := d.removeIPTables(); err != nil {
		t.Fatal(err)
	}
	want := "*nat\n-D POSTROUTING -j SLUICE-POSTROUTING\n-F SLUICE-POSTROUTING\n-X SLUICE-POSTROUTING\nCOMMIT\n"
	if len(f.restores) != 1 || f.restores[0] != want {
		t.Errorf("got %q want %q", f.restores, want)
	}
}

func TestIPSetScripts(t *testing.T) {
	have := parseIPSetSave([]byte(`create KUBE-X hash:ip family inet
add KUBE-X 10.0.0.1
create SLUICE-EXCEPT hash:net family inet hashsize 1024 maxelem 65536
add SLUICE-EXCEPT 10.244.0.0/16
add SLUICE-EXCEPT 192.0.2.99
create SLUICE-EG-old hash:ip family inet
add SLUICE-EG-old 10.244.9.9
create SLUICE-EG-a hash:net family inet
`))
	if _, ok := have["KUBE-X"]; ok || len(have) != 3 || len(have[SetExcept].Members) != 2 {
		t.Fatalf("parsed %+v", have)
	}
	want := []IPSet{
		{Name: SetExcept, Type: "hash:net", Members: []string{"10.244.0.0/16", "192.0.2.11"}},
		{Name: "SLUICE-EG-a", Type: "hash:ip", Members: []string{"10.244.1.2"}},
		{Name: "SLUICE-EG-b", Type: "hash:ip", Members: []string{"10.244.1.3"}},
	}
	adds, dels := ipsetScripts(have, want)
	wantAdds := "add SLUICE-EXCEPT 192.0.2.11\n" +
		"create SLUICE-TMP hash:ip family inet maxelem 262144\nflush SLUICE-TMP\nadd SLUICE-TMP 10.244.1.2\nswap SLUICE-TMP SLUICE-EG-a\ndestroy SLUICE-TMP\n" +
		"create SLUICE-EG-b hash:ip family inet maxelem 262144\nadd SLUICE-EG-b 10.244.1.3\n"
	wantDels := "del SLUICE-EXCEPT 192.0.2.99\ndestroy SLUICE-EG-old\n"
	if string(adds) != wantAdds || string(dels) != wantDels {
		t.Errorf("adds\n%s\nwant\n%s\ndels\n%s\nwant\n%s", adds, wantAdds, dels, wantDels)
	}
	// In sync: nothing to do.
	have = map[string]*IPSet{}
	for i := range want {
		have[want[i].Name] = &want[i]
	}
	if a, d := ipsetScripts(have, want); a != nil || d != nil {
		t.Errorf("in sync but got %q %q", a, d)
	}
}

// The parsers read tool output that other software on the node shapes
// (their chains, sets and comments): they must never panic.
func FuzzParseIPTablesSave(f *testing.F) {
	f.Add([]byte("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j SLUICE-POSTROUTING\nCOMMIT\n"))
	f.Add([]byte("-A \n:\n-A X"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for chain, rules := range parseIPTablesSave(b) {
			if strings.ContainsAny(chain, " \n") {
				t.Fatalf("chain name %q", chain)
			}
			for _, r := range rules {
				if !strings.Contains(string(b), "-A "+chain+" "+r) {
					t.Fatalf("rule %q of %q not in the input", r, chain)
				}
			}
		}
	})
}

func FuzzParseIPSetSave(f *testing.F) {
	f.Add([]byte("create SLUICE-EXCEPT hash:net family inet\nadd SLUICE-EXCEPT 10.0.0.0/8\n"))
	f.Add([]byte("add SLUICE-X 1\ncreate SLUICE-X"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, s := range parseIPSetSave(b) {
			if !strings.HasPrefix(name, "SLUICE-") || s.Name != name {
				t.Fatalf("parsed foreign or misnamed set %q (%q)", name, s.Name)
			}
		}
	})
}

// moved is d with "staging" failed over to this Node: its mark rule leaves
// mangle and its SNAT joins nat.
func moved(d Desired) Desired {
	d.Egresses[0].OwnerNodeIP, d.Egresses[0].Local = n1, true
	d.HeldIPs = append(d.HeldIPs, d.Egresses[0].EgressIP)
	return d
}
