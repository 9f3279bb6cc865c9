package cniproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned for a frame whose announced length exceeds
// MaxMessageSize. The stream cannot be trusted after it.
var ErrTooLarge = errors.New("message exceeds size limit")

// ReadFrame reads one length-prefixed message of at most max bytes.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read message body: %w", err)
	}
	return body, nil
}

// WriteFrame marshals v and writes it as one length-prefixed message.
func WriteFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	return writeBody(w, body)
}

// writeBody writes an already encoded body with its length prefix.
func writeBody(w io.Writer, body []byte) error {
	if len(body) > MaxMessageSize {
		return fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, len(body), MaxMessageSize)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	_, err := w.Write(buf)
	return err
}
