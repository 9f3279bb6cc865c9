package bench

import (
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
	md := Render(map[string]Figure{"x_ms": {Value: 1.5, Unit: "ms", Target: "<= 3", Command: "make bench"}})
	if !strings.Contains(md, "| `x_ms` | 1.5 | ms | <= 3 | yes |") {
		t.Fatalf("render:\n%s", md)
	}
}
