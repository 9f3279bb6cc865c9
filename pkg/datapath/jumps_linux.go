package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/sluicenet/sluice/pkg/iptbackend"
	"golang.org/x/sys/unix"
)

// Sluice's jumps must stay first (Jumps): another agent that inserts at
// position 1 of nat POSTROUTING (a MASQUERADE) would otherwise take the
// selected Pods' new connections until the next full Apply, seconds later
// (the exit guard drops them meanwhile, so they fail rather than leak).
// WatchJumps notices such a change within tens of milliseconds and puts
// the jumps back:
//
//   - on the nft backend, iptables rules are nftables rules: a netlink
//     monitor (NFNLGRP_NFTABLES) reports every transaction that touched a
//     rule outside Sluice's own chains, and the tables it touched are
//     checked;
//   - on the legacy backend there is no notification, so each table's
//     x_tables info (IPT_SO_GET_INFO: rule count, size, hook offsets; one
//     getsockopt, no exec) is polled every LegacyJumpPoll, and a table
//     whose info changed is checked.
//
// A check reads the table back (iptables-save) and restores the jumps and
// Sluice's chains if they differ from the last Apply.
const (
	LegacyJumpPoll  = 50 * time.Millisecond
	jumpDebounce    = 10 * time.Millisecond
	iptSoGetInfo    = 64 // IPT_SO_GET_INFO, linux/netfilter_ipv4/ip_tables.h
	xtTableMaxNamel = 32
)

// WatchJumps runs until ctx ends, repairing the jumps whenever another
// agent changes a table that holds one. It returns early only when the
// change source cannot be opened.
func (d *Datapath) WatchJumps(ctx context.Context) error {
	changed := make(chan string, 16)
	mode := d.cfg.IPTables.Mode
	if mode != iptbackend.NFT { // legacy, or unknown: the iptables on PATH may be either
		if err := pollLegacyTables(ctx, changed); err != nil {
			return err
		}
	}
	if mode != iptbackend.Legacy {
		if err := monitorNFTables(ctx, changed); err != nil {
			return err
		}
	}
	for {
		var first string
		select {
		case <-ctx.Done():
			return nil
		case first = <-changed:
		}
		touched := map[string]bool{first: true}
		timer := time.NewTimer(jumpDebounce)
	collect:
		for {
			select {
			case t := <-changed:
				touched[t] = true
			case <-timer.C:
				break collect
			case <-ctx.Done():
				timer.Stop()
				return nil
			}
		}
		if n, err := d.RepairJumps(touched); err != nil {
			d.log.Warn("repair jumps", "err", err)
		} else if n > 0 {
			d.log.Info("another agent moved Sluice's jumps; put back", "tables", n)
		}
	}
}

// RepairJumps reads back each of the given tables that holds a Sluice
// jump and restores what differs from the last Apply. It returns how many
// tables it rewrote; without a record of the last Apply it does nothing
// (the next Apply reads everything back).
func (d *Datapath) RepairJumps(touched map[string]bool) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.applied == nil {
		return 0, nil
	}
	want := d.applied.chains
	n := 0
	var errs []error
	for _, table := range slices.Sorted(maps.Keys(touched)) {
		if _, ours := want[table]; !ours {
			continue
		}
		have, err := d.readTable(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		script := iptablesScript(have, table, want[table])
		if script == nil {
			continue
		}
		d.writes++
		n++
		if err := d.ipt.Restore(table, script); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// monitorNFTables sends the iptables table of every ip-family nftables
// transaction that touched a rule outside Sluice's own chains and table.
func monitorNFTables(ctx context.Context, changed chan<- string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("watch jumps: %w", err)
	}
	// All objects: v0.3.0 tests a narrower object mask as
	// "flags&1<<type", which is (flags&1)<<type and passes nothing.
	m := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectAny), nftables.WithMonitorEventBuffer(64))
	events, err := c.AddGenerationalMonitor(m)
	if err != nil {
		return fmt.Errorf("watch jumps: nftables monitor: %w", err)
	}
	go func() {
		<-ctx.Done()
		m.Close()
	}()
	go func() {
		for batch := range events {
			if batch.GeneratedBy != nil && batch.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				// The monitor ended (a receive error, such as a full
				// socket buffer): check everything once; the resync
				// goes on repairing.
				for _, t := range tables {
					send(changed, t)
				}
				continue
			}
			for _, ev := range batch.Changes {
				table, ok := foreignRuleTable(ev)
				switch {
				case ok && table == "":
					for _, t := range tables {
						send(changed, t)
					}
				case ok:
					send(changed, table)
				}
			}
		}
	}()
	return nil
}

// foreignRuleTable returns the iptables table an event changed, when the
// change is not Sluice's own: a rule outside the SLUICE-* chains, or a
// deleted chain or table (nft flush ruleset). A rule the library could
// not decode counts, for every table.
func foreignRuleTable(ev *nftables.MonitorEvent) (string, bool) {
	var table *nftables.Table
	switch ev.Type {
	case nftables.MonitorEventTypeNewRule, nftables.MonitorEventTypeDelRule:
		r, _ := ev.Data.(*nftables.Rule)
		if r == nil || r.Table == nil || r.Chain == nil {
			return "", true
		}
		if strings.HasPrefix(r.Chain.Name, setPrefix) {
			return "", false
		}
		table = r.Table
	case nftables.MonitorEventTypeDelChain:
		if ch, _ := ev.Data.(*nftables.Chain); ch != nil && !strings.HasPrefix(ch.Name, setPrefix) {
			table = ch.Table
		}
	case nftables.MonitorEventTypeDelTable:
		table, _ = ev.Data.(*nftables.Table)
	}
	if table == nil || table.Family != nftables.TableFamilyIPv4 {
		return "", false
	}
	return table.Name, slices.Contains(tables, table.Name)
}

func send(ch chan<- string, table string) {
	select {
	case ch <- table:
	default: // a check is already due
	}
}

// iptGetinfo is struct ipt_getinfo.
type iptGetinfo struct {
	Name       [xtTableMaxNamel]byte
	ValidHooks uint32
	HookEntry  [5]uint32
	Underflow  [5]uint32
	NumEntries uint32
	Size       uint32
}

// pollLegacyTables sends each x_tables table whose info changed.
func pollLegacyTables(ctx context.Context, changed chan<- string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("watch jumps: raw socket: %w", err)
	}
	last := map[string]iptGetinfo{}
	for _, t := range tables {
		if info, err := tableInfo(fd, t); err == nil {
			last[t] = info
		}
	}
	go func() {
		defer unix.Close(fd)
		tick := time.NewTicker(LegacyJumpPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, t := range tables {
				info, err := tableInfo(fd, t)
				if err != nil {
					continue
				}
				if prev, ok := last[t]; !ok || prev != info {
					last[t] = info
					send(changed, t)
				}
			}
		}
	}()
	return nil
}

func tableInfo(fd int, table string) (iptGetinfo, error) {
	var info iptGetinfo
	copy(info.Name[:], table)
	size := uint32(unsafe.Sizeof(info))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_IP, iptSoGetInfo,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return info, e
	}
	return info, nil
}
