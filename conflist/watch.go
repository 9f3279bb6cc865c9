package conflist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Timing of the watcher. A primary CNI rewrites its file on restart (flannel
// copies it; Calico writes it in place, not atomically), so events come in
// bursts and the file may be seen half-written.
const (
	// DefaultDebounce is how long the watcher waits after the last event in
	// a burst before it looks at the directory. Short enough to react well
	// within a second.
	DefaultDebounce = 100 * time.Millisecond
	// DefaultRetry is how soon the watcher looks again when a file sorting
	// before the primary did not load (likely half-written).
	DefaultRetry = 250 * time.Millisecond
	// maxRetries bounds the quick retries in a row (2s at DefaultRetry)
	// spent waiting for a half-written file before it is taken as broken.
	maxRetries = 8
	// DefaultResync is the periodic full pass, a safety net for missed
	// events (inotify queue overflow, a directory replaced under us).
	DefaultResync = 5 * time.Second
)

// WatchConfig configures Watch. Zero durations take the defaults above.
type WatchConfig struct {
	Dir      string
	Entry    Entry
	Debounce time.Duration
	Retry    time.Duration
	Resync   time.Duration
	Log      *slog.Logger
}

func (c *WatchConfig) defaults() {
	if c.Debounce <= 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Retry <= 0 {
		c.Retry = DefaultRetry
	}
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Watch keeps the sluice entry in the primary network until ctx ends. It
// runs Install once at start, then after every burst of changes to
// configuration files and every Resync. Its own writes cause one more pass
// that finds nothing to change, so it never loops.
func Watch(ctx context.Context, cfg WatchConfig) error {
	cfg.defaults()
	if err := cfg.Entry.Validate(); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", cfg.Dir, err)
	}
	defer w.Close()
	if err := w.Add(cfg.Dir); err != nil {
		return fmt.Errorf("watch %s: %w", cfg.Dir, err)
	}
	resync := time.NewTicker(cfg.Resync)
	defer resync.Stop()
	pass := time.NewTimer(0) // first pass right away
	defer pass.Stop()
	st := passState{broken: map[string]bool{}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			if relevant(ev) {
				delete(st.broken, filepath.Base(ev.Name)) // changed: maybe being rewritten
				pass.Reset(cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			cfg.Log.Warn("watch error, resyncing", "dir", cfg.Dir, "err", err)
			pass.Reset(cfg.Debounce)
		case <-resync.C:
			// Re-adding is a no-op for a live watch and renews one lost
			// when the directory was removed and created again.
			if err := w.Add(cfg.Dir); err != nil {
				cfg.Log.Warn("re-watch", "dir", cfg.Dir, "err", err)
			}
			pass.Reset(0)
		case <-pass.C:
			if st.run(cfg) {
				pass.Reset(cfg.Retry)
			}
		}
	}
}

// passState carries what the watcher learnt between passes.
type passState struct {
	// retries counts quick retries in a row spent waiting for files that
	// sort before the primary and do not load.
	retries int
	// broken are such files (base names) that were waited for in vain; they
	// are skipped without waiting until they change again.
	broken map[string]bool
}

// run installs once and reports whether to look again soon. When a file
// sorting before the primary does not load, it is probably being rewritten
// in place (Calico), so the pass changes nothing and retries: patching the
// next file would chain sluice onto, or convert, a network that is about to
// stop being the primary. After maxRetries the file is taken as broken and
// skipped, as the runtime does.
func (st *passState) run(cfg WatchConfig) (retry bool) {
	pick, err := FindPrimary(cfg.Dir, cfg.Log)
	if st.unsettled(pick.Skipped) && st.retries < maxRetries {
		st.retries++
		return true
	}
	st.retries = 0
	for _, f := range pick.Skipped {
		st.broken[filepath.Base(f)] = true
	}
	switch {
	case errors.Is(err, ErrNoPrimary):
		cfg.Log.Info("no primary network yet, waiting", "dir", cfg.Dir)
	case err != nil:
		cfg.Log.Error("find primary network", "err", err)
	default:
		_, err := InstallPrimary(cfg.Dir, pick.Path, cfg.Entry, cfg.Log)
		switch {
		case errors.Is(err, ErrConcurrentChange):
			// The rewrite's own event brings another pass.
			cfg.Log.Info("primary rewritten while patching, looking again", "err", err)
		case err != nil:
			// Not transient as far as we know (a file we cannot patch);
			// the next event or resync looks again.
			cfg.Log.Error("install sluice entry", "err", err)
		}
	}
	return false
}

// unsettled reports whether a skipped file is not yet known to be broken.
func (st *passState) unsettled(skipped []string) bool {
	for _, f := range skipped {
		if !st.broken[filepath.Base(f)] {
			return true
		}
	}
	return false
}

// relevant keeps events on configuration files; our temp files, editor
// swap files and pure chmods are noise.
func relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	return slices.Contains(confExtensions, filepath.Ext(ev.Name))
}
