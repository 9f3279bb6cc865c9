package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// The patcher edits a conflist as text: it finds the byte range of every
// element of the "plugins" list and splices the sluice entry in or out. All
// other bytes, including unknown fields, key order, number spelling and
// whitespace, stay as they were, so RemoveEntry(AppendEntry(x)) == x byte for
// byte when x had no sluice entry.

// span is the byte range [start, end) of one JSON value in the document.
type span struct{ start, end int }

// listDoc is a conflist with the positions of its plugins list elements.
type listDoc struct {
	data []byte
	// open is the offset of the '[' of the effective "plugins" list (the last
	// one when the key is repeated, as encoding/json and so libcni take it).
	open    int
	plugins []span
	types   []string // "type" of each plugin, as libcni decodes it
}

// parseList validates data the way containerd loads a .conflist (libcni
// ConfListFromBytes) and locates the plugins list elements.
func parseList(data []byte) (*listDoc, error) {
	if _, err := libcni.ConfListFromBytes(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	doc := &listDoc{data: data, open: -1}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		if key, _ := tok.(string); key == "plugins" {
			if err := doc.readPlugins(dec); err != nil {
				return nil, err
			}
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, fmt.Errorf("read value: %w", err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the configuration")
	}
	if doc.open < 0 || len(doc.plugins) == 0 {
		// libcni accepts a list without "plugins" (the plugins may then live
		// in a per-network directory); the patcher cannot chain onto that.
		return nil, errors.New("no inline plugins list")
	}
	return doc, nil
}

// readPlugins records the element spans of one "plugins" list.
func (doc *listDoc) readPlugins(dec *json.Decoder) error {
	if err := expectDelim(dec, '['); err != nil {
		return fmt.Errorf("plugins: %w", err)
	}
	doc.open = int(dec.InputOffset()) - 1
	doc.plugins, doc.types = nil, nil
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("read plugin %d: %w", len(doc.plugins), err)
		}
		end := int(dec.InputOffset())
		var t struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("plugin %d: %w", len(doc.plugins), err)
		}
		doc.plugins = append(doc.plugins, span{end - len(raw), end})
		doc.types = append(doc.types, t.Type)
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("expected %q: %w", want, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("expected %q, found %v", want, tok)
	}
	return nil
}

func (doc *listDoc) raw(i int) []byte { return doc.data[doc.plugins[i].start:doc.plugins[i].end] }

// sluiceIndexes returns the positions of the sluice entries.
func (doc *listDoc) sluiceIndexes() []int {
	var idx []int
	for i, t := range doc.types {
		if t == PluginType {
			idx = append(idx, i)
		}
	}
	return idx
}

// without rebuilds the document keeping only the plugins for which keep is
// true. Each kept element keeps the separator that preceded it, so the text
// around the list is untouched. At least one element must be kept.
func (doc *listDoc) without(drop func(i int) bool) []byte {
	n := len(doc.plugins)
	var out bytes.Buffer
	out.Write(doc.data[:doc.plugins[0].start])
	first := true
	for i := range n {
		if drop(i) {
			continue
		}
		if !first {
			out.Write(doc.data[doc.plugins[i-1].end:doc.plugins[i].start])
		}
		out.Write(doc.raw(i))
		first = false
	}
	out.Write(doc.data[doc.plugins[n-1].end:])
	return out.Bytes()
}

// appendRaw inserts entry as a new last element, after the same separator the
// file already uses between elements.
func (doc *listDoc) appendRaw(e Entry) ([]byte, error) {
	n := len(doc.plugins)
	var sep string
	if n >= 2 {
		sep = string(doc.data[doc.plugins[n-2].end:doc.plugins[n-1].start])
	} else {
		sep = "," + string(doc.data[doc.open+1:doc.plugins[0].start])
	}
	prefix, indent := layout(sep, doc.raw(n-1))
	entry, err := e.marshal(prefix, indent)
	if err != nil {
		return nil, err
	}
	last := doc.plugins[n-1].end
	var out bytes.Buffer
	out.Write(doc.data[:last])
	out.WriteString(sep)
	out.Write(entry)
	out.Write(doc.data[last:])
	return out.Bytes(), nil
}

// layout guesses the indentation of list elements from the separator before
// the last one and the inner indentation of that element. Empty indent means
// the file is compact.
func layout(sep string, last []byte) (prefix, indent string) {
	nl := strings.LastIndexByte(sep, '\n')
	if nl < 0 {
		return "", ""
	}
	prefix = sep[nl+1:]
	indent = "  "
	if i := bytes.IndexByte(last, '\n'); i >= 0 {
		rest := last[i+1:]
		inner := string(rest[:len(rest)-len(bytes.TrimLeft(rest, " \t"))])
		if len(inner) > len(prefix) && strings.HasPrefix(inner, prefix) {
			indent = inner[len(prefix):]
		}
	}
	return prefix, indent
}

// AppendEntry returns the conflist data with the sluice entry as its last
// plugin. It returns data unchanged when that entry is already last with the
// same options, updates a last sluice entry with other options in place, and
// moves misplaced or duplicate sluice entries to one at the end. The
// cniVersion and every other byte outside the sluice entries are kept.
func AppendEntry(data []byte, e Entry) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	doc, err := parseList(data)
	if err != nil {
		return nil, err
	}
	idx := doc.sluiceIndexes()
	n := len(doc.plugins)
	if len(idx) == n {
		return nil, errors.New("no plugin to chain sluice after: the list holds only sluice entries")
	}
	if len(idx) == 1 && idx[0] == n-1 {
		return doc.replaceLast(e)
	}
	if len(idx) > 0 {
		isSluice := func(i int) bool { return doc.types[i] == PluginType }
		if doc, err = parseList(doc.without(isSluice)); err != nil {
			return nil, fmt.Errorf("reparse after removing sluice entries: %w", err)
		}
	}
	out, err := doc.appendRaw(e)
	if err != nil {
		return nil, err
	}
	return checkList(out)
}

// replaceLast rewrites, in place, a last sluice entry whose options differ.
func (doc *listDoc) replaceLast(e Entry) ([]byte, error) {
	n := len(doc.plugins)
	want, err := e.marshal("", "")
	if err != nil {
		return nil, err
	}
	if jsonEqual(doc.raw(n-1), want) {
		return doc.data, nil
	}
	sep := string(doc.data[doc.plugins[n-2].end:doc.plugins[n-1].start])
	prefix, indent := layout(sep, doc.raw(n-1))
	entry, err := e.marshal(prefix, indent)
	if err != nil {
		return nil, err
	}
	last := doc.plugins[n-1]
	out := make([]byte, 0, len(doc.data)+len(entry))
	out = append(out, doc.data[:last.start]...)
	out = append(out, entry...)
	out = append(out, doc.data[last.end:]...)
	return checkList(out)
}

// RemoveEntry returns the conflist data without any sluice entry. Data without
// one is returned unchanged.
func RemoveEntry(data []byte) ([]byte, error) {
	doc, err := parseList(data)
	if err != nil {
		return nil, err
	}
	idx := doc.sluiceIndexes()
	switch {
	case len(idx) == 0:
		return data, nil
	case len(idx) == len(doc.plugins):
		return nil, errors.New("the list holds only sluice entries; removing them would leave no plugin")
	}
	return checkList(doc.without(func(i int) bool { return doc.types[i] == PluginType }))
}

// HasEntry reports whether the conflist data holds a sluice entry.
func HasEntry(data []byte) (bool, error) {
	doc, err := parseList(data)
	if err != nil {
		return false, err
	}
	return len(doc.sluiceIndexes()) > 0, nil
}

// ConfToList turns a single-plugin .conf into the equivalent conflist, the
// way containerd upconverts it (libcni ConfListFromConf): top-level "name"
// and "cniVersion" copied from the plugin, which becomes the only element.
// The cniVersion is never changed; the plugin's bytes are only re-indented.
func ConfToList(data []byte) ([]byte, error) {
	conf, err := libcni.ConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == PluginType {
		return nil, errors.New("the network's only plugin is sluice")
	}
	var body bytes.Buffer
	if err := json.Indent(&body, bytes.TrimSpace(data), "    ", "  "); err != nil {
		return nil, fmt.Errorf("indent plugin: %w", err)
	}
	name, _ := json.Marshal(conf.Network.Name)
	var out bytes.Buffer
	out.WriteString("{\n")
	if v := conf.Network.CNIVersion; v != "" {
		ver, _ := json.Marshal(v)
		fmt.Fprintf(&out, "  \"cniVersion\": %s,\n", ver)
	}
	fmt.Fprintf(&out, "  \"name\": %s,\n  \"plugins\": [\n    %s\n  ]\n}\n", name, body.Bytes())
	return checkList(out.Bytes())
}

// checkList makes sure the patcher never hands out something containerd
// would refuse to load.
func checkList(out []byte) ([]byte, error) {
	if _, err := libcni.ConfListFromBytes(out); err != nil {
		return nil, fmt.Errorf("patched configuration does not load: %w", err)
	}
	return out, nil
}

// jsonEqual reports whether a and b decode to the same value.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ea, _ := json.Marshal(va)
	eb, _ := json.Marshal(vb)
	return bytes.Equal(ea, eb)
}
