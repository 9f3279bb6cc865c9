package conflist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

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
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return writeAtomic(path, data, mode, nil)
}

// ErrConcurrentChange means a file changed between our read and our write,
// typically the primary CNI rewriting it. Nothing was written; the change
// itself makes a watcher look again.
var ErrConcurrentChange = errors.New("changed while being patched")

// sameContent is a writeAtomic precondition: path still holds want.
func sameContent(path string, want []byte) func() error {
	return func() error {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("%s: %w", path, ErrConcurrentChange)
		}
		return nil
	}
}

// writeAtomic is WriteFileAtomic with a precondition checked just before
// the rename, which narrows (not closes: there is no compare-and-swap
// rename) the window in which a concurrent rewrite of the file is lost.
func writeAtomic(path string, data []byte, mode fs.FileMode, unchanged func() error) (err error) {
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
	if unchanged != nil {
		if err = unchanged(); err != nil {
			return err
		}
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
	// The C front execs FullPluginName next to itself whenever the helper
	// cannot run the call: install that first, so that the front is never
	// there without it. A Go plugin built as sluice needs no companion.
	full := filepath.Join(filepath.Dir(src), FullPluginName)
	if fdata, err := os.ReadFile(full); err == nil {
		if err := WriteFileAtomic(filepath.Join(binDir, FullPluginName), fdata, 0o755); err != nil {
			return "", err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", full, err)
	}
	dst := filepath.Join(binDir, PluginType)
	return dst, WriteFileAtomic(dst, data, 0o755)
}

// RemoveBinary removes binDir/sluice and binDir/sluice-full; a missing
// binary is not an error.
func RemoveBinary(binDir string) error {
	for _, name := range []string{PluginType, FullPluginName} {
		err := os.Remove(filepath.Join(binDir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove plugin binary: %w", err)
		}
	}
	return nil
}
