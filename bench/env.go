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
	return envValue(t, name, def, lo, hi, strconv.Atoi, "an integer")
}

// EnvDuration is EnvInt for durations.
func EnvDuration(t testing.TB, name string, def, lo, hi time.Duration) time.Duration {
	t.Helper()
	return envValue(t, name, def, lo, hi, time.ParseDuration, "a duration")
}

func envValue[T int | time.Duration](t testing.TB, name string, def, lo, hi T, parse func(string) (T, error), what string) T {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := parse(s)
	if err != nil || v < lo || v > hi {
		t.Fatalf("%s=%q: want %s in %v..%v", name, s, what, lo, hi)
	}
	return v
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
