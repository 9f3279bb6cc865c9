// Package registry is the helper's record of the Node's CNI attachments,
// keyed by container ID + ifname as CNI keys them. It is fed three ways:
// live reports from the plugin over the cniproto socket (Registry is a
// cniproto.Handler), the spool the plugin wrote while the helper was away,
// and, at start-up, a scan of the host veths the plugin tagged. The kernel
// tags make the helper restartable without any message from the plugin.
//
// The registry is the one owner of the attachments: an ADD is listed from
// the moment it arrives, while OnAdd prepares it, and is dropped again if
// OnAdd refuses it. The rest of the helper hooks in through OnAdd (called
// synchronously before the plugin's ADD is acknowledged, so the Pod's
// datapath can be programmed before its first packet) and Subscribe (told
// of every change).
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Attachment and Key are the protocol's: the registry stores what the
// plugin reports, no more.
type (
	Attachment = cniproto.Attachment
	Key        = cniproto.Key
)

// EventType says what happened to an attachment.
type EventType int

const (
	Added EventType = iota + 1
	Removed
)

// Event is one change, delivered to subscribers after it is recorded.
type Event struct {
	Type       EventType
	Attachment Attachment
	// Prepared: List already showed this attachment, as it is, while
	// OnAdd ran; a reconcile OnAdd waited for has seen it.
	Prepared bool
}

// Options configures a Registry.
type Options struct {
	// OnAdd runs before the plugin's ADD is acked, while List already
	// shows the attachment (in place of any record under its key). An
	// error refuses the ADD (the plugin then fails with "try again
	// later"), and List no longer shows it. OnAdd may call List; it must
	// not change the Registry.
	OnAdd func(ctx context.Context, a Attachment) error
	Log   *slog.Logger
}

// Registry holds the attachments. Safe for concurrent use.
type Registry struct {
	opts Options

	mu    sync.Mutex
	byKey map[Key]Attachment
	// preparing are the ADDs whose OnAdd runs; List shows them in place
	// of byKey's record under the same key.
	preparing map[Key]prepared
	seq       uint64
	subs      map[int]func(Event)
	next      int
}

// prepared is an ADD whose OnAdd runs; seq tells a later ADD of the same
// key apart.
type prepared struct {
	att Attachment
	seq uint64
}

var _ cniproto.Handler = (*Registry)(nil)

// New returns an empty registry.
func New(opts Options) *Registry {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Registry{opts: opts, byKey: map[Key]Attachment{}, preparing: map[Key]prepared{}, subs: map[int]func(Event){}}
}

// Subscribe registers fn for every later change and returns a function
// that unregisters it. fn is called outside the registry's lock, in the
// goroutine that made the change, so it must be quick (e.g. poke a
// reconciler's channel without blocking).
func (r *Registry) Subscribe(fn func(Event)) (cancel func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	r.subs[id] = fn
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs, id)
	}
}

func (r *Registry) notify(evs []Event) {
	if len(evs) == 0 {
		return
	}
	r.mu.Lock()
	fns := make([]func(Event), 0, len(r.subs))
	for _, fn := range r.subs {
		fns = append(fns, fn)
	}
	r.mu.Unlock()
	for _, ev := range evs {
		for _, fn := range fns {
			fn(ev)
		}
	}
}

// Add lists a while OnAdd runs, then records it, or drops it again when
// OnAdd refuses it. A repeated ADD replaces the record.
func (r *Registry) Add(ctx context.Context, a Attachment) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("invalid attachment: %w", err)
	}
	r.mu.Lock()
	r.seq++
	p := prepared{att: a, seq: r.seq}
	r.preparing[a.Key] = p
	r.mu.Unlock()
	var err error
	if r.opts.OnAdd != nil {
		err = r.opts.OnAdd(ctx, a)
	}
	r.mu.Lock()
	current := r.preparing[a.Key].seq == p.seq
	if current {
		delete(r.preparing, a.Key)
		if err == nil {
			r.byKey[a.Key] = a
		}
	}
	r.mu.Unlock()
	if err != nil {
		if current {
			// What OnAdd prepared must go again (and a record it stood in
			// for comes back).
			r.notify([]Event{{Type: Removed, Attachment: a}})
		}
		return fmt.Errorf("prepare %s: %w", a.Key, err)
	}
	if current {
		r.opts.Log.Info("attachment added", "key", a.Key.String(), "veth", a.HostVeth, "ips", a.PodIPs)
		r.notify([]Event{{Type: Added, Attachment: a, Prepared: true}})
	}
	// Not current: a DEL, or a later ADD of the same key, came while OnAdd
	// ran, and that one stands.
	return nil
}

// record keeps each of as and tells the subscribers.
func (r *Registry) record(as ...Attachment) {
	evs := make([]Event, 0, len(as))
	r.mu.Lock()
	for _, a := range as {
		r.byKey[a.Key] = a
		evs = append(evs, Event{Type: Added, Attachment: a})
	}
	r.mu.Unlock()
	r.notify(evs)
}

// Del forgets k, and an ADD of k being prepared. Unknown keys are not an
// error: DEL comes more than once.
func (r *Registry) Del(_ context.Context, k Key) error {
	r.mu.Lock()
	a, ok := r.byKey[k]
	if p, preparing := r.preparing[k]; preparing {
		a, ok = p.att, true
	}
	delete(r.byKey, k)
	delete(r.preparing, k)
	r.mu.Unlock()
	if ok {
		r.opts.Log.Info("attachment removed", "key", k.String())
		r.notify([]Event{{Type: Removed, Attachment: a}})
	}
	return nil
}

// Check tells whether k is recorded (an ADD being prepared is not yet).
func (r *Registry) Check(_ context.Context, k Key) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.byKey[k]
	return ok, nil
}

// GC forgets every recorded attachment not in valid and returns how many
// it forgot. ADDs being prepared are left to their own outcome.
func (r *Registry) GC(_ context.Context, valid []Key) (int, error) {
	keep := make(map[Key]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	var evs []Event
	r.mu.Lock()
	for k, a := range r.byKey {
		if !keep[k] {
			delete(r.byKey, k)
			evs = append(evs, Event{Type: Removed, Attachment: a})
		}
	}
	r.mu.Unlock()
	r.opts.Log.Info("gc", "valid", len(valid), "removed", len(evs))
	r.notify(evs)
	return len(evs), nil
}

// List returns the attachments sorted by key, those being prepared
// included.
func (r *Registry) List(context.Context) []Attachment {
	r.mu.Lock()
	out := make([]Attachment, 0, len(r.byKey)+len(r.preparing))
	for k, a := range r.byKey {
		if _, ok := r.preparing[k]; !ok {
			out = append(out, a)
		}
	}
	for _, p := range r.preparing {
		out = append(out, p.att)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
	return out
}

// Replay applies one request as if it came over the socket (the spool path).
func (r *Registry) Replay(ctx context.Context, req cniproto.Request) error {
	if err := req.Validate(); err != nil {
		return err
	}
	switch req.Kind {
	case cniproto.KindAdd:
		return r.Add(ctx, *req.Attachment)
	case cniproto.KindDel:
		return r.Del(ctx, *req.Key)
	case cniproto.KindGC:
		_, err := r.GC(ctx, req.Valid)
		return err
	}
	return fmt.Errorf("%s requests are not replayable", req.Kind)
}

// ReplaySpool applies the spooled requests in order and deletes each file
// once applied. A file that cannot be read or applied is kept for the next
// start and reported in the joined error.
func (r *Registry) ReplaySpool(ctx context.Context, dir string) (int, error) {
	ents, rerr := cniproto.ReadSpool(dir)
	errs := []error{rerr}
	n := 0
	for _, e := range ents {
		if err := r.Replay(ctx, e.Request); err != nil {
			errs = append(errs, fmt.Errorf("replay %s: %w", e.Path, err))
			continue
		}
		if err := removeFile(e.Path); err != nil {
			errs = append(errs, err)
		}
		n++
	}
	return n, errors.Join(errs...)
}

// WatchSpool replays the spool every interval until ctx ends, so that a
// request the plugin spooled while this helper ran (it was busy, or the
// socket timed out) counts within interval, not at the next start: a DEL
// spooled then would otherwise leave a deleted Pod's IP in SNAT sets until
// the helper restarted. A file that keeps failing is logged once per
// distinct error and retried.
func (r *Registry) WatchSpool(ctx context.Context, dir string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.ReplaySpool(ctx, dir)
		if n > 0 {
			r.opts.Log.Info("spool replayed", "dir", dir, "requests", n)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != "" && msg != last {
			r.opts.Log.Warn("spool replay (will retry)", "dir", dir, "err", err)
		}
		last = msg
	}
}

// Restore records attachments found in the kernel (the tag scan) all at
// once, without OnAdd: the kernel already holds their state, and a
// starting helper's first plan must see every one of them. (Through OnAdd
// each waited for a reconcile of its own, so the first plans saw them one
// by one; a Pod whose object still named a recreated sandbox's old IP was
// left out of them, and its flow dropped for about 1.5 s.) An invalid one
// is skipped and reported.
func (r *Registry) Restore(_ context.Context, found []Attachment) error {
	var errs []error
	var valid []Attachment
	for _, a := range found {
		if err := a.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("invalid attachment: %w", err))
			continue
		}
		valid = append(valid, a)
	}
	r.opts.Log.Info("attachments restored", "count", len(valid))
	r.record(valid...)
	return errors.Join(errs...)
}

// untagged returns the keys of have that are not among tagged.
func untagged(have, tagged []Attachment) []Key {
	in := make(map[Key]bool, len(tagged))
	for _, a := range tagged {
		in[a.Key] = true
	}
	var out []Key
	for _, a := range have {
		if !in[a.Key] {
			out = append(out, a.Key)
		}
	}
	return out
}
