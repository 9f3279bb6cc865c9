package cniproto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, body, wantErr string
	}{
		{"add", `{"version":1,"kind":"add","attachment":{"containerID":"abc","ifname":"eth0","podIPs":["10.244.0.5"]}}`, ""},
		{"del", `{"version":1,"kind":"del","key":{"containerID":"abc","ifname":"eth0"}}`, ""},
		{"gc empty", `{"version":1,"kind":"gc"}`, ""},
		{"status", `{"version":1,"kind":"status"}`, ""},
		{"wrong version", `{"version":2,"kind":"status"}`, "unsupported protocol version 2"},
		{"unknown kind", `{"version":1,"kind":"reboot"}`, "unknown request kind"},
		{"add no attachment", `{"version":1,"kind":"add"}`, "without attachment"},
		{"del no key", `{"version":1,"kind":"del"}`, "without key"},
		{"bad container id", `{"version":1,"kind":"del","key":{"containerID":"a b","ifname":"eth0"}}`, "invalid container ID"},
		{"bad ifname", `{"version":1,"kind":"check","key":{"containerID":"a","ifname":"../x"}}`, "invalid interface name"},
		{"bad ip", `{"version":1,"kind":"add","attachment":{"containerID":"a","ifname":"eth0","podIPs":["nope"]}}`, "invalid pod IP"},
		{"unknown field", `{"version":1,"kind":"status","extra":1}`, "unknown field"},
		{"trailing", `{"version":1,"kind":"status"}{}`, "trailing data"},
		{"not json", `hello`, "decode request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tt.body))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFrameRoundTripAndLimit(t *testing.T) {
	var buf bytes.Buffer
	req := Request{Version: Version, Kind: KindStatus}
	if err := WriteFrame(&buf, req); err != nil {
		t.Fatal(err)
	}
	body, err := ReadFrame(&buf, MaxMessageSize)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRequest(body); err != nil || got.Kind != KindStatus {
		t.Fatalf("got %+v, %v", got, err)
	}
	// A header announcing more than the limit is refused before reading.
	hdr := []byte{0x7f, 0xff, 0xff, 0xff}
	if _, err := ReadFrame(bytes.NewReader(hdr), MaxMessageSize); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize frame: err = %v, want ErrTooLarge", err)
	}
	big := Request{Version: Version, Kind: KindGC}
	for i := 0; i < 3000; i++ {
		big.Valid = append(big.Valid, Key{ContainerID: strings.Repeat("a", 64), IfName: "eth0"})
	}
	if err := WriteFrame(&bytes.Buffer{}, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize write: err = %v, want ErrTooLarge", err)
	}
}

func TestTagRoundTrip(t *testing.T) {
	cid := strings.Repeat("f", 64)
	a := Attachment{
		Key:          Key{ContainerID: cid, IfName: "eth0"},
		PodNamespace: "kube-system",
		PodName:      "coredns-5d78c9869d-abcde",
		PodUID:       "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
		PodIPs:       []string{"10.244.0.5", "fd00::5"},
	}
	tag, err := FormatTag(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(tag) > MaxTagLen {
		t.Fatalf("tag is %d bytes", len(tag))
	}
	got, err := ParseTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != a.Key || got.PodNamespace != a.PodNamespace || got.PodName != a.PodName ||
		got.PodUID != a.PodUID || strings.Join(got.PodIPs, ",") != strings.Join(a.PodIPs, ",") {
		t.Fatalf("round trip: got %+v, want %+v", got, a)
	}

	// A name too long to fit is dropped, the key and IPs are kept.
	a.PodName = strings.Repeat("n", 200)
	tag, err = FormatTag(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err = ParseTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if got.PodName != "" || got.PodNamespace != "kube-system" || got.Key != a.Key || len(got.PodIPs) != 2 {
		t.Fatalf("truncated tag: got %+v", got)
	}

	// Only an over-long key itself cannot be tagged.
	a.Key.ContainerID = strings.Repeat("c", 200)
	if tag, err := FormatTag(a); err != nil || len(tag) > MaxTagLen {
		t.Fatalf("long container ID: %q %v", tag, err)
	}
	a.Key.ContainerID = strings.Repeat("c", 250)
	if _, err := FormatTag(a); err == nil {
		t.Fatal("a key longer than the alias limit was tagged")
	}

	for _, bad := range []string{"other", "sluice:1:abc", "sluice:1:abc:eth0:nons:uid:", "sluice:1:a b:eth0:/:u:"} {
		if _, err := ParseTag(bad); err == nil {
			t.Errorf("ParseTag(%q) succeeded", bad)
		}
	}
}

func TestSpoolOrderAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	base := time.Unix(1700000000, 0)
	add := Request{Kind: KindAdd, Attachment: &Attachment{Key: Key{ContainerID: "c1", IfName: "eth0"}}}
	del := Request{Kind: KindDel, Key: &Key{ContainerID: "c1", IfName: "eth0"}}
	// Written out of order on purpose: the later timestamp first.
	if _, err := WriteSpool(dir, del, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteSpool(dir, add, base); err != nil {
		t.Fatal(err)
	}
	ents, err := ReadSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 || ents[0].Request.Kind != KindAdd || ents[1].Request.Kind != KindDel {
		t.Fatalf("spool order: %+v", ents)
	}
	if _, err := WriteSpool(dir, Request{Kind: KindAdd}, base); err == nil {
		t.Fatal("invalid request was spooled")
	}
	if ents, err := ReadSpool(dir + "/missing"); err != nil || len(ents) != 0 {
		t.Fatalf("missing spool dir: %v %v", ents, err)
	}
}
