// Package cniplugin is the logic of the chained `sluice` CNI plugin: it
// finds the Pod's host veth, tags it, reports the attachment to the helper
// over pkg/cniproto and passes the previous result through unchanged.
// plugin/main.go only hands Funcs() to skel.
package cniplugin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Defaults for the fields of the sluice entry in a conflist.
const (
	// DefaultTimeout bounds how long ADD waits for the helper's ack. Pod
	// start-up is on the critical path, so this is short; the spool covers
	// a helper that is down.
	DefaultTimeout = time.Second
	maxTimeout     = 30 * time.Second
)

// Config is the sluice entry of a conflist, e.g.
//
//	{"type": "sluice", "socket": "/var/run/sluice/cni.sock", "timeout": "1s",
//	 "failClosed": false, "spoolDir": "/var/run/sluice/spool", "logFile": ""}
type Config struct {
	types.NetConf

	Socket     string `json:"socket,omitempty"`
	TimeoutStr string `json:"timeout,omitempty"`
	FailClosed bool   `json:"failClosed,omitempty"`
	SpoolDir   string `json:"spoolDir,omitempty"`
	LogFile    string `json:"logFile,omitempty"`

	Timeout time.Duration `json:"-"`
}

// ParseConfig reads stdin, fills defaults, validates, and parses
// prevResult in the network's own cniVersion.
func ParseConfig(stdin []byte) (*Config, error) {
	c := &Config{}
	// prevResult is kept raw: the library's way decodes it into a generic
	// map, marshals that and decodes it again, three passes the helper
	// runs on every Pod's ADD.
	in := struct {
		*Config
		PrevResult json.RawMessage `json:"prevResult,omitempty"`
	}{Config: c}
	if err := json.Unmarshal(stdin, &in); err != nil {
		return nil, fmt.Errorf("parse network configuration: %w", err)
	}
	if c.Socket == "" {
		c.Socket = cniproto.DefaultSocketPath
	}
	if c.SpoolDir == "" {
		c.SpoolDir = cniproto.DefaultSpoolDir
	}
	c.Timeout = DefaultTimeout
	if c.TimeoutStr != "" {
		d, err := time.ParseDuration(c.TimeoutStr)
		if err != nil {
			return nil, fmt.Errorf("parse timeout %q: %w", c.TimeoutStr, err)
		}
		if d <= 0 || d > maxTimeout {
			return nil, fmt.Errorf("timeout %v out of range (0, %v]", d, maxTimeout)
		}
		c.Timeout = d
	}
	if err := parsePrevResult(c, in.PrevResult); err != nil {
		return nil, fmt.Errorf("parse prevResult: %w", err)
	}
	return c, nil
}

// parsePrevResult sets c.PrevResult from its raw JSON as
// version.ParsePrevResult would: decoded by the network's cniVersion,
// taking that version when the result names none. A result that names its
// version decodes the same in one pass; one that does not goes the
// library's way, which fills it in.
func parsePrevResult(c *Config, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	r, err := create.Create(c.CNIVersion, raw)
	if err == nil && r.Version() != "" {
		c.PrevResult = r
		return nil
	}
	if err := json.Unmarshal(raw, &c.RawPrevResult); err != nil {
		return err
	}
	return version.ParsePrevResult(&c.NetConf)
}

// podArgs are the Kubernetes fields runtimes put in CNI_ARGS.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS names
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
}

func parsePodArgs(s string) (podArgs, error) {
	var a podArgs
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, &a); err != nil {
		return podArgs{}, fmt.Errorf("parse CNI_ARGS: %w", err)
	}
	return a, nil
}
