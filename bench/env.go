package bench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// Require skips unless SLUICE_BENCH=1 (so `make test` only compiles the
// benchmarks) and unless root.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("SLUICE_BENCH") != "1" {
		t.Skip("benchmark: set SLUICE_BENCH=1 to run")
	}
	nstest.RequireRoot(t)
}

// EnvInt is the integer in environment variable name, or def when unset;
// anything outside [lo, hi] fails the benchmark.
func EnvInt(t testing.TB, name string, def, lo, hi int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		t.Fatalf("%s=%q: want an integer in %d..%d", name, s, lo, hi)
	}
	return n
}

// EnvDuration is EnvInt for durations.
func EnvDuration(t testing.TB, name string, def, lo, hi time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < lo || d > hi {
		t.Fatalf("%s=%q: want a duration in %s..%s", name, s, lo, hi)
	}
	return d
}

// Report logs figs, then records them when asked (RecordIfAsked).
func Report(t testing.TB, figs ...Figure) {
	t.Helper()
	Log(t, figs...)
	RecordIfAsked(t, figs...)
}

// Log logs one line per figure.
func Log(t testing.TB, figs ...Figure) {
	t.Helper()
	for _, f := range figs {
		t.Logf("%s = %.3f %s (target %q): %s", f.Name, f.Value, f.Unit, f.Target, f.Note)
	}
}

// RecordIfAsked merges figs into bench/results.json (Record) when
// SLUICE_BENCH_RECORD=1.
func RecordIfAsked(t testing.TB, figs ...Figure) {
	t.Helper()
	if os.Getenv("SLUICE_BENCH_RECORD") != "1" {
		return
	}
	if err := Record(figs...); err != nil {
		t.Fatal(err)
	}
}
