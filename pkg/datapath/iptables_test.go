package datapath

import (
	"slices"
	"testing"
)

// afterScript is what the kernel holds once the script is restored: after
// it, iptablesScript has nothing left to write, whatever the table held.
func TestAfterScriptLeavesNothingToWrite(t *testing.T) {
	c := testConfig()
	want := BuildChains(c, twoEgresses())
	for name, save := range map[string]string{
		"empty":  "",
		"fresh":  "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -s 192.0.2.99 -j DROP\nCOMMIT\n",
		"pushed": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j SLUICE-GUARD\n-A FORWARD -j SLUICE-FWD-ACCEPT\n-A FORWARD -j SLUICE-GUARD\n-A FORWARD -j SLUICE-FWD-ACCEPT\nCOMMIT\n",
		"nat":    "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\n-A POSTROUTING -j SLUICE-POSTROUTING\nCOMMIT\n",
	} {
		all := parseIPTablesSaveAll([]byte(save))
		for _, table := range tables {
			have := all[table]
			if have == nil {
				have = tableRules{}
			}
			if script := iptablesScript(afterScript(have, table, want[table]), table, want[table]); script != nil {
				t.Errorf("%s, table %s: after the script, still to write:\n%s", name, table, script)
			}
		}
	}
	all := parseIPTablesSaveAll([]byte("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"))
	if len(all) != 2 || !slices.Equal(all["nat"]["POSTROUTING"], []string{"-j MASQUERADE"}) || all["mangle"]["PREROUTING"] == nil && len(all["mangle"]) != 1 {
		t.Errorf("parsed %v", all)
	}
	got := afterScript(all["nat"], "nat", want["nat"])["POSTROUTING"]
	if !slices.Equal(got, []string{"-j " + ChainPostrouting, "-j MASQUERADE"}) {
		t.Errorf("POSTROUTING after the script: %q, want the jump first", got)
	}
}
