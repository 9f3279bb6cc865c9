package binaries

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// The C front speaks cniproto's exec protocol with constants of its own
// (it cannot import Go): they must be the protocol's.
func TestFrontConstantsMatchTheProtocol(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var src string
	for _, f := range []string{"plugin/shim/front.h", "plugin/shim/sluice.c"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		src += string(b)
	}
	define := func(name string) string {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (.+)$`).FindStringSubmatch(src)
		if m == nil {
			t.Fatalf("the front (front.h, sluice.c) defines no %s", name)
		}
		return strings.TrimSpace(m[1])
	}
	number := func(name string) int {
		v := define(name)
		if m := regexp.MustCompile(`^\((\d+) \* (\d+)\)$`).FindStringSubmatch(v); m != nil {
			a, _ := strconv.Atoi(m[1])
			b, _ := strconv.Atoi(m[2])
			return a * b
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s = %s: not a number this test reads", name, v)
		}
		return n
	}
	str := func(name string) string {
		// C's "\0" is Go's "\x00".
		s, err := strconv.Unquote(regexp.MustCompile(`\\0([^0-7]|$)`).ReplaceAllString(define(name), `\x00$1`))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return s
	}
	if got := str("DEFAULT_SOCKET"); got != cniproto.DefaultSocketPath {
		t.Errorf("DEFAULT_SOCKET %q, cniproto.DefaultSocketPath %q", got, cniproto.DefaultSocketPath)
	}
	if got := number("MAX_MESSAGE"); got != cniproto.MaxMessageSize {
		t.Errorf("MAX_MESSAGE %d, cniproto.MaxMessageSize %d", got, cniproto.MaxMessageSize)
	}
	magic := str("EXEC_MAGIC")
	if number("EXEC_MAGIC_LEN") != len(magic) || !cniproto.IsExec([]byte(magic)) {
		t.Errorf("EXEC_MAGIC %q (length %d) is not cniproto's exec magic", magic, number("EXEC_MAGIC_LEN"))
	}
	if number("REPLY_DONE") != int(cniproto.ExecDone) || number("REPLY_FALLBACK") != int(cniproto.ExecFallback) {
		t.Errorf("REPLY_DONE %d / REPLY_FALLBACK %d, cniproto %d / %d",
			number("REPLY_DONE"), number("REPLY_FALLBACK"), cniproto.ExecDone, cniproto.ExecFallback)
	}
	m := regexp.MustCompile(`(?s)forwarded_env\[\] = \{(.*?)\}`).FindStringSubmatch(src)
	if m == nil {
		t.Fatal("sluice.c has no forwarded_env list")
	}
	var env []string
	for _, q := range regexp.MustCompile(`"[A-Z_]+"`).FindAllString(m[1], -1) {
		env = append(env, strings.Trim(q, `"`))
	}
	if !slices.Equal(env, cniproto.ExecEnv) {
		t.Errorf("forwarded_env %v, cniproto.ExecEnv %v", env, cniproto.ExecEnv)
	}
}
