// Package cniproto is the protocol between the sluice CNI plugin and the
// helper on the same Node: versioned JSON messages over a Unix socket.
//
// Wire format: every message is a 4-byte big-endian length followed by that
// many bytes of JSON. The length is checked against MaxMessageSize before a
// single byte of the body is read, so a peer can never make the other side
// buffer more than 64 KiB. A connection carries any number of request/reply
// pairs, one at a time.
package cniproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Version is the protocol version. A server answers a request carrying any
// other version with an error reply naming both versions.
const Version = 1

// MaxMessageSize bounds every message in both directions. 64 KiB holds a
// GC request with well over a thousand valid attachments.
const MaxMessageSize = 64 << 10

// DefaultSocketPath is where the helper listens.
const DefaultSocketPath = "/var/run/sluice/cni.sock"

// DefaultSpoolDir is where the plugin spools reports while the helper is
// down, and where the helper replays them from (spool.go).
const DefaultSpoolDir = "/var/run/sluice/spool"

// Kind names a request.
type Kind string

const (
	// KindAdd reports a new attachment. The helper acks only once it has
	// done what a new Pod needs (later: programmed its egress datapath).
	KindAdd Kind = "add"
	// KindDel reports that an attachment is gone. Unknown keys are fine.
	KindDel Kind = "del"
	// KindCheck asks whether the helper knows an attachment.
	KindCheck Kind = "check"
	// KindGC lists the valid attachments; the helper forgets the rest.
	KindGC Kind = "gc"
	// KindStatus asks for readiness and the list of known attachments.
	KindStatus Kind = "status"
)

// Mutating tells whether a request kind changes the helper's state, which
// only uid 0 may do.
func (k Kind) Mutating() bool {
	return k == KindAdd || k == KindDel || k == KindGC
}

// Key identifies an attachment, as CNI does: container ID + ifname.
type Key struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func (k Key) String() string { return k.ContainerID + "/" + k.IfName }

// Attachment is what the plugin reports about one Pod interface.
type Attachment struct {
	Key
	Netns        string   `json:"netns,omitempty"`
	PodNamespace string   `json:"podNamespace,omitempty"`
	PodName      string   `json:"podName,omitempty"`
	PodUID       string   `json:"podUID,omitempty"`
	PodIPs       []string `json:"podIPs,omitempty"` // addresses without prefix length
	HostVeth     string   `json:"hostVeth,omitempty"`
	HostIfIndex  int      `json:"hostIfIndex,omitempty"`
}

// Request is one message from the plugin to the helper.
type Request struct {
	Version    int         `json:"version"`
	Kind       Kind        `json:"kind"`
	Attachment *Attachment `json:"attachment,omitempty"` // add
	Key        *Key        `json:"key,omitempty"`        // del, check
	Valid      []Key       `json:"valid,omitempty"`      // gc
}

// Response is the helper's reply to one Request.
type Response struct {
	Version     int          `json:"version"`
	OK          bool         `json:"ok"`
	Error       string       `json:"error,omitempty"`
	Known       bool         `json:"known,omitempty"`       // check
	Removed     int          `json:"removed,omitempty"`     // gc
	Attachments []Attachment `json:"attachments,omitempty"` // status
}

// Validate checks the fields a request of its kind must carry.
func (r *Request) Validate() error {
	if r.Version != Version {
		return fmt.Errorf("unsupported protocol version %d (this side speaks %d)", r.Version, Version)
	}
	switch r.Kind {
	case KindAdd:
		if r.Attachment == nil {
			return errors.New("add request without attachment")
		}
		if err := r.Attachment.Validate(); err != nil {
			return err
		}
	case KindDel, KindCheck:
		if r.Key == nil {
			return fmt.Errorf("%s request without key", r.Kind)
		}
		if err := r.Key.Validate(); err != nil {
			return err
		}
	case KindGC:
		for _, k := range r.Valid {
			if err := k.Validate(); err != nil {
				return fmt.Errorf("gc valid attachment: %w", err)
			}
		}
	case KindStatus:
	default:
		return fmt.Errorf("unknown request kind %q", r.Kind)
	}
	return nil
}

// Validate checks a key against what CNI allows: a non-empty container ID
// of [A-Za-z0-9_.-] and a Linux interface name.
func (k Key) Validate() error {
	if k.ContainerID == "" {
		return errors.New("empty container ID")
	}
	if len(k.ContainerID) > 256 || strings.IndexFunc(k.ContainerID, badIDRune) >= 0 {
		return fmt.Errorf("invalid container ID %q", k.ContainerID)
	}
	if k.IfName == "" || len(k.IfName) > 15 || strings.ContainsAny(k.IfName, "/: \t\n") || k.IfName == "." || k.IfName == ".." {
		return fmt.Errorf("invalid interface name %q", k.IfName)
	}
	return nil
}

func badIDRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-')
}

// Validate checks an attachment's key and addresses.
func (a *Attachment) Validate() error {
	if err := a.Key.Validate(); err != nil {
		return err
	}
	for _, ip := range a.PodIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("invalid pod IP %q", ip)
		}
	}
	return nil
}

// DecodeRequest parses and validates one request body. Unknown fields are
// rejected so that a mismatched peer fails loudly rather than silently
// dropping data.
func DecodeRequest(body []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	if dec.More() {
		return Request{}, errors.New("decode request: trailing data after JSON object")
	}
	if err := r.Validate(); err != nil {
		return Request{}, fmt.Errorf("invalid request: %w", err)
	}
	return r, nil
}

// DecodeResponse parses one response body.
func DecodeResponse(body []byte) (Response, error) {
	var r Response
	if err := json.Unmarshal(body, &r); err != nil {
		return Response{}, fmt.Errorf("decode response: %w", err)
	}
	if r.Version != Version {
		return Response{}, fmt.Errorf("unsupported protocol version %d in response (this side speaks %d)", r.Version, Version)
	}
	return r, nil
}
