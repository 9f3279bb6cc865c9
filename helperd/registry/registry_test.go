package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func att(cid string, ips ...string) Attachment {
	return Attachment{Key: Key{ContainerID: cid, IfName: "eth0"}, PodIPs: ips}
}

func TestAddDelCheckGCList(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var events []Event
	r := New(Options{Log: quiet()})
	cancel := r.Subscribe(func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	for _, c := range []string{"c3", "c1", "c2"} {
		if err := r.Add(ctx, att(c, "10.244.0.9")); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := r.Check(ctx, Key{ContainerID: "c1", IfName: "eth0"}); !ok {
		t.Fatal("c1 unknown after add")
	}
	if err := r.Del(ctx, Key{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Del(ctx, Key{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatalf("second del: %v", err)
	}
	n, err := r.GC(ctx, []Key{{ContainerID: "c2", IfName: "eth0"}})
	if err != nil || n != 1 {
		t.Fatalf("gc removed %d, %v", n, err)
	}
	got := r.List(ctx)
	if len(got) != 1 || got[0].ContainerID != "c2" {
		t.Fatalf("list %+v", got)
	}
	cancel()
	_ = r.Add(ctx, att("c4"))
	mu.Lock()
	defer mu.Unlock()
	want := []EventType{Added, Added, Added, Removed, Removed}
	if len(events) != len(want) {
		t.Fatalf("events %+v", events)
	}
	for i, e := range events {
		if e.Type != want[i] {
			t.Fatalf("event %d = %v, want %v", i, e.Type, want[i])
		}
	}
}

func TestOnAddRunsBeforeRecordAndCanRefuse(t *testing.T) {
	ctx := context.Background()
	var r *Registry
	r = New(Options{Log: quiet(), OnAdd: func(ctx context.Context, a Attachment) error {
		if a.ContainerID == "bad" {
			return errors.New("datapath not ready")
		}
		return nil
	}})
	if err := r.Add(ctx, att("bad")); err == nil {
		t.Fatal("OnAdd error did not refuse the add")
	}
	if ok, _ := r.Check(ctx, Key{ContainerID: "bad", IfName: "eth0"}); ok {
		t.Fatal("refused attachment was recorded")
	}
	if err := r.Add(ctx, att("good")); err != nil {
		t.Fatal(err)
	}
}

// The registry is the one owner of an ADD being prepared: List shows it
// while OnAdd runs (in place of the record it replaces), a refused one is
// gone again with the old record back and a Removed event, and a DEL that
// comes meanwhile wins.
func TestListShowsTheADDBeingPrepared(t *testing.T) {
	ctx := context.Background()
	var r *Registry
	var during [][]string
	refuse := map[string]bool{}
	del := false
	r = New(Options{Log: quiet(), OnAdd: func(ctx context.Context, a Attachment) error {
		var ips []string
		for _, l := range r.List(ctx) {
			ips = append(ips, l.PodIPs...)
		}
		during = append(during, ips)
		if del {
			_ = r.Del(ctx, a.Key)
		}
		if refuse[a.PodIPs[0]] {
			return errors.New("datapath not ready")
		}
		return nil
	}})
	var events []Event
	r.Subscribe(func(e Event) { events = append(events, e) })
	ips := func() []string {
		var out []string
		for _, l := range r.List(ctx) {
			out = append(out, l.PodIPs...)
		}
		return out
	}
	if err := r.Add(ctx, att("c1", "10.244.0.2")); err != nil {
		t.Fatal(err)
	}
	refuse["10.244.0.3"] = true
	if err := r.Add(ctx, att("c1", "10.244.0.3")); err == nil {
		t.Fatal("refused ADD returned nil")
	}
	if want := [][]string{{"10.244.0.2"}, {"10.244.0.3"}}; !reflect.DeepEqual(during, want) {
		t.Errorf("List during OnAdd: %v, want %v", during, want)
	}
	if got := ips(); !slices.Equal(got, []string{"10.244.0.2"}) {
		t.Errorf("List after a refused repeated ADD: %v, want the old record [10.244.0.2]", got)
	}
	want := []Event{{Type: Added, Attachment: att("c1", "10.244.0.2"), Prepared: true}, {Type: Removed, Attachment: att("c1", "10.244.0.3")}}
	if !reflect.DeepEqual(events, want) {
		t.Errorf("events %+v, want %+v", events, want)
	}
	del = true
	if err := r.Add(ctx, att("c2", "10.244.0.4")); err != nil {
		t.Fatal(err)
	}
	if got := ips(); !slices.Equal(got, []string{"10.244.0.2"}) {
		t.Errorf("List after a DEL during the ADD: %v, want the DEL to win", got)
	}
}

func TestReplaySpool(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Unix(1700000000, 0)
	k1 := Key{ContainerID: "c1", IfName: "eth0"}
	a1, a2 := att("c1", "10.244.0.2"), att("c2", "10.244.0.3")
	steps := []cniproto.Request{
		{Kind: cniproto.KindAdd, Attachment: &a1},
		{Kind: cniproto.KindAdd, Attachment: &a2},
		{Kind: cniproto.KindDel, Key: &k1},
	}
	for i, s := range steps {
		if _, err := cniproto.WriteSpool(dir, s, now.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(dir+"/99999999999999999999-add-junk-eth0.json", []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := New(Options{Log: quiet()})
	n, err := r.ReplaySpool(ctx, dir)
	if n != 3 || err == nil {
		t.Fatalf("replayed %d, err %v (want 3 and an error for the junk file)", n, err)
	}
	got := r.List(ctx)
	if len(got) != 1 || got[0].ContainerID != "c2" {
		t.Fatalf("after replay %+v", got)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 {
		t.Fatalf("spool left %d files, want only the junk one", len(left))
	}
}

func TestServesCNIProto(t *testing.T) {
	r := New(Options{Log: quiet()})
	path := t.TempDir() + "/cni.sock"
	l, err := cniproto.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&cniproto.Server{Handler: r, Log: quiet(), Authorize: func(cniproto.PeerCred, cniproto.Kind) error { return nil }}).Serve(ctx, l)
	}()
	defer func() { cancel(); <-done }()
	c := &cniproto.Client{Path: path}
	a := att("c9", "10.244.1.2")
	if _, err := c.Do(ctx, cniproto.Request{Kind: cniproto.KindAdd, Attachment: &a}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ctx, cniproto.Request{Kind: cniproto.KindStatus})
	if err != nil || len(resp.Attachments) != 1 || resp.Attachments[0].PodIPs[0] != "10.244.1.2" {
		t.Fatalf("status %+v %v", resp, err)
	}
}

func TestUntagged(t *testing.T) {
	have := []Attachment{att("a"), att("b"), att("c")}
	tagged := []Attachment{att("b"), att("z")}
	got := untagged(have, tagged)
	if len(got) != 2 || got[0].ContainerID != "a" || got[1].ContainerID != "c" {
		t.Fatalf("untagged = %v", got)
	}
	if got := untagged(nil, tagged); len(got) != 0 {
		t.Fatalf("untagged(nil) = %v", got)
	}
}

// A DEL the plugin spools while the helper runs is applied within the
// watch interval, without a restart.
func TestWatchSpoolAppliesLateDel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	r := New(Options{Log: quiet()})
	a1 := att("c1", "10.244.0.2")
	if err := r.Add(ctx, a1); err != nil {
		t.Fatal(err)
	}
	go r.WatchSpool(ctx, dir, 20*time.Millisecond)
	k1 := a1.Key
	if _, err := cniproto.WriteSpool(dir, cniproto.Request{Kind: cniproto.KindDel, Key: &k1}, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(r.List(ctx)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the spooled DEL was not applied: %+v", r.List(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if left, _ := os.ReadDir(dir); len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the spool file stayed")
		}
	}
}

// The kernel's attachments are recorded at once, without OnAdd (each used
// to wait for a reconcile of its own, so a starting helper's first plans
// saw them one by one); an invalid one is skipped and reported.
func TestRestoreRecordsAllAtOnce(t *testing.T) {
	ctx := context.Background()
	r := New(Options{Log: quiet(), OnAdd: func(context.Context, Attachment) error {
		t.Error("OnAdd ran for a restored attachment")
		return nil
	}})
	var added int
	r.Subscribe(func(e Event) {
		if e.Type == Added {
			added++
		}
	})
	err := r.Restore(ctx, []Attachment{att("c1", "10.244.0.2"), att("c2", "10.244.0.3"), {Key: Key{IfName: "eth0"}}})
	if err == nil {
		t.Error("an attachment without a container ID was restored without an error")
	}
	if got := r.List(ctx); len(got) != 2 || added != 2 {
		t.Fatalf("restored %d attachments (%d events), want 2", len(got), added)
	}
}
