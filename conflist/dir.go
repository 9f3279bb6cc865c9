package conflist

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// confExtensions are the files containerd (go-cni) and CRI-O read from the
// CNI configuration directory; the default network is the first of them in
// lexical (sort.Strings) order that loads.
var confExtensions = []string{".conf", ".conflist", ".json"}

// tempPrefix names our temporary files. They must not end in a configuration
// extension, or the runtime could load a half-written file.
const tempPrefix = ".sluice-tmp-"

// ErrNoPrimary means the directory holds no loadable network configuration.
var ErrNoPrimary = errors.New("no loadable CNI network configuration")

// Pick is the outcome of choosing the primary network.
type Pick struct {
	// Path of the primary configuration; empty when there is none.
	Path string
	// Skipped are files sorting before Path that failed to load. They may be
	// half-written by their CNI, so a watcher should look again soon.
	Skipped []string
}

// FindPrimary picks the primary network of dir as the runtime does: the
// configuration files sorted lexically (libcni ConfFiles + sort.Strings),
// each loaded with ConfListFromFile (.conflist) or ConfFromFile (.conf,
// .json), the first one that loads. Files that fail to load are logged and
// skipped, as CRI-O (ocicni) and the old kubelet CNI code do. containerd
// (go-cni loadFromConfDir) instead fails the whole load on such a file and
// keeps its previous configuration, so there skipping is harmless: once the
// broken file is removed the file we patched is the primary, and once it is
// fixed it is the primary and a watcher patches it.
func FindPrimary(dir string, log *slog.Logger) (Pick, error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return Pick{}, fmt.Errorf("list %s: %w", dir, err)
	}
	slices.Sort(files)
	var p Pick
	var errs []error
	for _, f := range files {
		if err := loadable(f); err != nil {
			log.Warn("skipping CNI configuration that does not load", "file", f, "err", err)
			p.Skipped = append(p.Skipped, f)
			errs = append(errs, fmt.Errorf("skipped %s: %w", f, err))
			continue
		}
		p.Path = f
		return p, nil
	}
	return p, fmt.Errorf("%s: %w", dir, errors.Join(append([]error{ErrNoPrimary}, errs...)...))
}

// loadable applies the checks containerd's loader makes.
func loadable(path string) error {
	var err error
	if isList(path) {
		_, err = libcni.ConfListFromFile(path)
	} else {
		_, err = libcni.ConfFromFile(path)
	}
	return err
}

func isList(path string) bool { return strings.HasSuffix(path, ".conflist") }

// Change says what Install or Uninstall did to one file.
type Change struct {
	Path    string // file written (or left alone)
	Removed string // a .conf replaced by Path, if any
	Changed bool   // false when the file already was as wanted
}

// Install makes the sluice entry the last plugin of the primary network of
// dir (see FindPrimary and InstallPrimary).
func Install(dir string, e Entry, log *slog.Logger) (Change, Pick, error) {
	pick, err := FindPrimary(dir, log)
	if err != nil {
		return Change{}, pick, err
	}
	ch, err := InstallPrimary(dir, pick.Path, e, log)
	return ch, pick, err
}

// InstallPrimary makes the sluice entry the last plugin of primary, a file
// of dir. A .conf is converted: the same content as a .conflist with the
// same base name, then the .conf is removed (a .conf and .conflist of the
// same base name would otherwise both sort before anything else, and the
// .conf first). Stale sluice entries in other conflists (left when the
// primary changed) are removed, so only the primary carries one.
func InstallPrimary(dir, primary string, e Entry, log *slog.Logger) (Change, error) {
	if err := e.Validate(); err != nil {
		return Change{}, err
	}
	ch, err := installFile(primary, e)
	if err != nil {
		return ch, err
	}
	if ch.Changed {
		log.Info("sluice entry installed", "file", ch.Path, "replaced", ch.Removed)
	}
	removeStale(dir, ch.Path, log)
	return ch, nil
}

func installFile(path string, e Entry) (Change, error) {
	data, mode, err := readFile(path)
	if err != nil {
		return Change{}, err
	}
	ch := Change{Path: path}
	list := data
	if !isList(path) {
		if list, err = ConfToList(data); err != nil {
			return ch, fmt.Errorf("convert %s to a conflist: %w", path, err)
		}
		if ch.Path, err = conversionTarget(path); err != nil {
			return ch, err
		}
		ch.Removed = path
	}
	out, err := AppendEntry(list, e)
	if err != nil {
		return ch, fmt.Errorf("append sluice entry to %s: %w", path, err)
	}
	if ch.Removed == "" && string(out) == string(data) {
		return ch, nil
	}
	ch.Changed = true
	if err := writeAtomic(ch.Path, out, mode, sameContent(path, data)); err != nil {
		return ch, err
	}
	if ch.Removed != "" {
		// A .conf rewritten meanwhile stays; it sorts first, so the next
		// pass converts it again.
		if err := sameContent(path, data)(); err != nil {
			return ch, err
		}
		if err := os.Remove(ch.Removed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ch, fmt.Errorf("remove converted %s: %w", ch.Removed, err)
		}
	}
	return ch, nil
}

// conversionTarget names the .conflist that replaces the primary .conf at
// path: same base name, so that it sorts where the .conf did. It refuses when
// that file exists and is another network's (no sluice entry: not written by
// us), or when another configuration file would sort between the two and so
// become the primary.
func conversionTarget(path string) (string, error) {
	target := strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	if data, err := os.ReadFile(target); err == nil {
		if ours, _ := HasEntry(data); !ours {
			return "", fmt.Errorf("convert %s: %s exists and is not ours", path, target)
		}
	}
	files, err := libcni.ConfFiles(filepath.Dir(path), confExtensions)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", filepath.Dir(path), err)
	}
	for _, f := range files {
		// A target sorting before the .conf (a .json) can only move earlier.
		if f > path && f < target {
			return "", fmt.Errorf("convert %s: %s sorts between it and %s and would become the primary", path, f, target)
		}
	}
	return target, nil
}

// removeStale removes sluice entries from every conflist but keep. Files it
// cannot patch are left alone: they are not the network the runtime uses.
func removeStale(dir, keep string, log *slog.Logger) {
	files, _ := libcni.ConfFiles(dir, []string{".conflist"})
	for _, f := range files {
		if f == keep {
			continue
		}
		ch, err := uninstallFile(f)
		if err != nil {
			continue
		}
		if ch.Changed {
			log.Info("removed stale sluice entry", "file", f)
		}
	}
}

// Uninstall removes the sluice entry from every conflist of dir. A conflist
// that Install converted from a .conf stays a .conflist: it is the same
// network to the runtime, and recreating the .conf would need state that a
// restarted primary CNI may already have overwritten.
func Uninstall(dir string, log *slog.Logger) ([]Change, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	slices.Sort(files)
	var changes []Change
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", f, err))
			continue
		}
		if has, err := HasEntry(data); err != nil || !has {
			if err != nil {
				log.Warn("skipping CNI configuration that does not load", "file", f, "err", err)
			}
			continue
		}
		ch, err := uninstallFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ch.Changed {
			log.Info("sluice entry removed", "file", f)
			changes = append(changes, ch)
		}
	}
	return changes, errors.Join(errs...)
}

func uninstallFile(path string) (Change, error) {
	ch := Change{Path: path}
	data, mode, err := readFile(path)
	if err != nil {
		return ch, err
	}
	out, err := RemoveEntry(data)
	if err != nil {
		return ch, fmt.Errorf("remove sluice entry from %s: %w", path, err)
	}
	if string(out) == string(data) {
		return ch, nil
	}
	ch.Changed = true
	return ch, writeAtomic(path, out, mode, sameContent(path, data))
}
