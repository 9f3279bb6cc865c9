package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := Median(xs); got != 3 {
		t.Fatalf("median = %v, want 3", got)
	}
	if got := Quantile([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99); got != 10 {
		t.Fatalf("p99 of 10 samples = %v, want the max", got)
	}
	if got := Quantile(nil, 0.5); got != 0 {
		t.Fatalf("empty = %v", got)
	}
}

func TestMetAndRender(t *testing.T) {
	for _, tc := range []struct {
		f         Figure
		met, know bool
	}{
		{Figure{Value: 2, Target: "<= 3"}, true, true},
		{Figure{Value: 4, Target: "<= 3"}, false, true},
		{Figure{Value: 0.85, Target: ">= 0.8"}, true, true},
		{Figure{Value: 0, Target: "== 0"}, true, true},
		{Figure{Value: 1}, false, false},
	} {
		met, known := tc.f.Met()
		if met != tc.met || known != tc.know {
			t.Errorf("%+v: Met() = %v,%v", tc.f, met, known)
		}
	}
	cmd := "SLUICE_BENCH=1 go test -run TestX ./bench/x/"
	md := Render(map[string]Figure{
		"x_ms":   {Value: 1.5, Unit: "ms", Target: "<= 3", Command: cmd, Note: "20 trials of x", When: "today"},
		"x_ok":   {Value: 0, Unit: "count", Target: "== 0", Command: cmd, Note: "20 trials of x", When: "today"},
		"x_more": {Value: 7, Unit: "s", Command: cmd, Note: "10 trials of y", When: "today"},
		"y_ms":   {Value: 9, Unit: "ms", Target: "<= 3", Command: "go test ./bench/y -run '^$' -bench Y", When: "today"},
	})
	for _, want := range []string{
		"## TestX\n\n`" + cmd + "`\n",
		"For `x_more`: 10 trials of y.",
		"For `x_ms`, `x_ok`: 20 trials of x.",
		"| `x_ms` | 1.5 | ms | <= 3 | yes | today |",
		"## Y\n",
		"| `y_ms` | 9 | ms | <= 3 | **no** | today |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("render lacks %q:\n%s", want, md)
		}
	}
	if strings.Count(md, "20 trials of x") != 1 {
		t.Errorf("a benchmark's method is repeated:\n%s", md)
	}
}

// BENCHMARKS.md is what Render makes of the recorded figures; with
// SLUICE_BENCH_RECORD=1 this test writes it.
func TestBenchmarksMDIsRendered(t *testing.T) {
	all, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	want := Render(all)
	path := filepath.Join(Root(), "BENCHMARKS.md")
	if os.Getenv("SLUICE_BENCH_RECORD") == "1" {
		if err := writeAtomic(path, []byte(want)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("BENCHMARKS.md is not what bench/results.json and bench/meta.json render to; run SLUICE_BENCH_RECORD=1 go test ./bench -run TestBenchmarksMDIsRendered")
	}
}
