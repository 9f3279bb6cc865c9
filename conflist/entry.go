// Package conflist appends the sluice entry to the primary CNI network
// configuration, removes it again, and keeps it there while the primary CNI
// rewrites its file.
//
// The patcher (AppendEntry, RemoveEntry, ConfToList) is pure: bytes in, bytes
// out. Install, Uninstall and Watch apply it to a configuration directory.
package conflist

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// PluginType is the "type" of the sluice entry, and the name of its binary in
// the CNI bin dir.
const PluginType = "sluice"

// FullPluginName is the complete Go plugin the C front (installed as
// PluginType) runs when the helper cannot take a call.
const FullPluginName = "sluice-full"

// Entry holds the options of the sluice entry. The JSON keys are the plugin's
// configuration keys; empty options are left out so that the plugin's own
// defaults apply.
type Entry struct {
	// Socket is the helper's Unix socket (plugin default /var/run/sluice/cni.sock).
	Socket string `json:"socket,omitempty"`
	// Timeout bounds how long ADD waits for the helper, as a Go duration
	// string such as "1s" (plugin default 1s).
	Timeout string `json:"timeout,omitempty"`
	// FailClosed makes ADD fail with CNI code 11 when the helper is unreachable.
	FailClosed bool `json:"failClosed,omitempty"`
	// LogFile is where the plugin logs; empty means stderr.
	LogFile string `json:"logFile,omitempty"`
}

// Validate checks the options before anything is written.
func (e Entry) Validate() error {
	if e.Timeout != "" {
		d, err := time.ParseDuration(e.Timeout)
		if err != nil {
			return fmt.Errorf("invalid timeout %q: %w", e.Timeout, err)
		}
		if d <= 0 {
			return fmt.Errorf("invalid timeout %q: must be positive", e.Timeout)
		}
	}
	return nil
}

// marshal renders the entry with "type" first. With a non-empty prefix it is
// indented to sit inside a plugins list indented by prefix.
func (e Entry) marshal(prefix, indent string) ([]byte, error) {
	v := struct {
		Type string `json:"type"`
		Entry
	}{PluginType, e}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal sluice entry: %w", err)
	}
	if indent == "" {
		return b, nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, prefix, indent); err != nil {
		return nil, fmt.Errorf("indent sluice entry: %w", err)
	}
	return out.Bytes(), nil
}
