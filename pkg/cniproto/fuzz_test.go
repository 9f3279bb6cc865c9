package cniproto

import (
	"bytes"
	"testing"
)

// FuzzDecodeRequest feeds arbitrary bytes through the same path the server
// uses: frame reader, then decoder. Neither may panic, and whatever decodes
// must be valid and survive a re-encode.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"kind":"add","attachment":{"containerID":"abc","ifname":"eth0","podIPs":["10.244.0.5"]}}`))
	f.Add([]byte(`{"version":1,"kind":"gc","valid":[{"containerID":"a","ifname":"eth0"}]}`))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if body, err := ReadFrame(bytes.NewReader(data), MaxMessageSize); err == nil {
			_, _ = DecodeRequest(body)
		}
		req, err := DecodeRequest(data)
		if err != nil {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("decoded request fails validation: %v", err)
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, req); err != nil {
			return // valid but too large to re-send is acceptable
		}
		body, err := ReadFrame(&buf, MaxMessageSize)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRequest(body); err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
	})
}
