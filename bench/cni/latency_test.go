package cnibench

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		in          []time.Duration
		median, p99 float64
	}{
		{ms(5), 5, 5},
		{ms(3, 1, 2), 2, 3},
		{ms(4, 1, 3, 2), 2.5, 4},
		{ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 100), 1, 100},
	}
	for _, tt := range tests {
		s := Summarize(tt.in)
		if s.Median != tt.median || s.P99 != tt.p99 || s.N != len(tt.in) {
			t.Errorf("Summarize(%v) = %+v, want median %v p99 %v", tt.in, s, tt.median, tt.p99)
		}
	}
	r := Compare(ms(10, 10, 10), ms(12, 12, 13), ms(5), ms(6))
	if r.AddOverheadMed != 2 || r.AddOverheadP99 != 3 || r.DelOverheadMed != 1 || r.AddRatioMedian != 1.2 {
		t.Errorf("Compare = %+v", r)
	}
	// Paired: a slow stretch of the machine hits both ADDs of an
	// iteration, so it cancels in each difference.
	r = Compare(ms(10, 10, 50, 50, 50), ms(11, 11, 51, 51, 51), nil, nil)
	if r.AddPairedMedian != 1 {
		t.Errorf("paired median %v, want 1", r.AddPairedMedian)
	}
}

func TestFiguresCarryTargets(t *testing.T) {
	figs := Figures(Results{Runs: 40, AddOverheadMed: 2.5, AddOverheadP99: 12})
	if figs[0].Name != "cni_add_overhead_median_ms" || figs[0].Value != 2.5 || figs[0].Target != "<= 3" {
		t.Fatalf("median figure %+v", figs[0])
	}
	if met, known := figs[1].Met(); !known || met {
		t.Fatalf("p99 12 ms against <= 10: met=%v known=%v", met, known)
	}
}

func TestBootstrapIntervals(t *testing.T) {
	// A drifting machine (up to 20 ms, common to both ADDs of an
	// iteration), a little noise of each ADD's own (< 0.5 ms), and sluice
	// adding 2 ms: the paired interval is narrow around 2, the difference
	// of medians' interval brackets 2 but is wider.
	var without, with []time.Duration
	for i := range 200 {
		drift := time.Duration((i*37)%20) * time.Millisecond
		e1 := time.Duration((i*7919)%500) * time.Microsecond
		e2 := time.Duration((i*104729)%500) * time.Microsecond
		without, with = append(without, 30*time.Millisecond+drift+e1), append(with, 32*time.Millisecond+drift+e2)
	}
	r := Compare(without, with, nil, nil)
	plo, phi := r.AddPairedMedianCI[0], r.AddPairedMedianCI[1]
	if plo > 2 || phi < 2 || phi-plo > 0.3 {
		t.Errorf("paired interval %v: want a narrow one around 2", r.AddPairedMedianCI)
	}
	lo, hi := r.AddOverheadMedCI[0], r.AddOverheadMedCI[1]
	if lo > 2 || hi < 2 || hi-lo < 3*(phi-plo) {
		t.Errorf("difference of medians interval %v, paired %v: want it around 2 and much wider", r.AddOverheadMedCI, r.AddPairedMedianCI)
	}
}
