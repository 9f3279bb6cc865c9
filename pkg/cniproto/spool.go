package cniproto

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The spool is where the plugin leaves the requests it could not deliver
// (helper down or slow). One file per request, named
//
//	<unix-nanoseconds, 20 digits>-<kind>-<containerID>-<ifname>.json
//
// so that a lexical sort replays them in the order they happened (an ADD
// before the DEL of the same attachment). Files are written to a dot-named
// temp file and renamed, so the reader never sees half a request.

// SpoolEntry is one spooled request and the file that holds it.
type SpoolEntry struct {
	Path    string
	Request Request
}

// WriteSpool stores req atomically in dir (created 0700 if missing).
func WriteSpool(dir string, req Request, now time.Time) (string, error) {
	req.Version = Version
	if err := req.Validate(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create spool dir: %w", err)
	}
	var k Key
	switch {
	case req.Attachment != nil:
		k = req.Attachment.Key
	case req.Key != nil:
		k = *req.Key
	}
	name := fmt.Sprintf("%020d-%s-%s-%s.json", now.UnixNano(), req.Kind, k.ContainerID, k.IfName)
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create spool temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := WriteFrame(tmp, req); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write spool file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("sync spool file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("close spool file: %w", err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("rename spool file: %w", err)
	}
	return path, nil
}

// ReadSpool returns the spooled requests in the order they were written.
// Unreadable or invalid files come back in the joined error and are
// skipped; a missing dir is an empty spool.
func ReadSpool(dir string) ([]SpoolEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read spool dir: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []SpoolEntry
	var errs []error
	for _, n := range names {
		p := filepath.Join(dir, n)
		req, err := readSpoolFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("spool file %s: %w", n, err))
			continue
		}
		out = append(out, SpoolEntry{Path: p, Request: req})
	}
	return out, errors.Join(errs...)
}

func readSpoolFile(path string) (Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return Request{}, err
	}
	defer f.Close()
	body, err := ReadFrame(f, MaxMessageSize)
	if err != nil {
		return Request{}, err
	}
	return DecodeRequest(body)
}
