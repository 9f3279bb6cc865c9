package conflist

import (
	"errors"
	"fmt"
	"io"
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
// configuration files sorted lexically, the first one that loads. Files that
// fail to load are logged and skipped.
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
		ch.Path = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
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
	if err := WriteFileAtomic(ch.Path, out, mode); err != nil {
		return ch, err
	}
	if ch.Removed != "" {
		if err := os.Remove(ch.Removed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ch, fmt.Errorf("remove converted %s: %w", ch.Removed, err)
		}
	}
	return ch, nil
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
	return ch, WriteFileAtomic(path, out, mode)
}

func readFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return data, st.Mode().Perm(), nil
}

// WriteFileAtomic replaces path with data: a temp file in the same
// directory (named so that no runtime loads it), fsync, chmod, rename, and an
// fsync of the directory. A reader sees the old file or the new one, never a
// mix, and containerd's watcher reloads on the rename.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // durability of the rename; failure here is not worth failing the install
		d.Close()
	}
	return nil
}

// CopyBinary installs the plugin binary src as binDir/sluice, mode 0755,
// atomically (a running plugin keeps its old inode).
func CopyBinary(src, binDir string) (string, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read plugin binary: %w", err)
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", binDir, err)
	}
	dst := filepath.Join(binDir, PluginType)
	return dst, WriteFileAtomic(dst, data, 0o755)
}

// RemoveBinary removes binDir/sluice; a missing binary is not an error.
func RemoveBinary(binDir string) error {
	err := os.Remove(filepath.Join(binDir, PluginType))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove plugin binary: %w", err)
	}
	return nil
}
