// Package bench records benchmark figures. Every benchmark merges its
// figures into bench/results.json (a flat object: name → {value, unit,
// target}) and BENCHMARKS.md is rendered from it, with the command that
// produced each figure, so benchmarks can run one at a time or all at once.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Figure is one measured number.
type Figure struct {
	Name    string  `json:"-"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Target  string  `json:"target"` // e.g. "<= 3", ">= 0.8"; "" for context figures
	Command string  `json:"-"`      // what produced it
	Note    string  `json:"-"`      // how it was measured: runs, medians, side by side
	When    string  `json:"-"`
}

// meta is what results.json leaves out (it is exactly name → {value, unit,
// target}); it lives in bench/meta.json.
type meta struct {
	Command string `json:"command"`
	Note    string `json:"note,omitempty"`
	When    string `json:"when"`
}

// Root is the repository root, found from this file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Record merges figs into bench/results.json and re-renders BENCHMARKS.md.
func Record(figs ...Figure) error {
	path := filepath.Join(Root(), "bench", "results.json")
	metaPath := filepath.Join(Root(), "bench", "meta.json")
	all, metas, err := load()
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format("2006-01-02 15:04 UTC")
	for _, f := range figs {
		if f.Name == "" {
			return errors.New("bench: a figure has no name")
		}
		f.When = now
		all[f.Name] = f
		metas[f.Name] = meta{Command: f.Command, Note: f.Note, When: now}
	}
	if err := writeJSON(path, all); err != nil {
		return err
	}
	if err := writeJSON(metaPath, metas); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(Root(), "BENCHMARKS.md"), []byte(Render(all)))
}

// Load reads every recorded figure with its command, note and date.
func Load() (map[string]Figure, error) {
	all, _, err := load()
	return all, err
}

func load() (map[string]Figure, map[string]meta, error) {
	all, metas := map[string]Figure{}, map[string]meta{}
	if err := readJSON(filepath.Join(Root(), "bench", "results.json"), &all); err != nil {
		return nil, nil, err
	}
	if err := readJSON(filepath.Join(Root(), "bench", "meta.json"), &metas); err != nil {
		return nil, nil, err
	}
	for name, f := range all {
		m := metas[name]
		f.Name, f.Command, f.Note, f.When = name, m.Command, m.Note, m.When
		all[name] = f
	}
	return all, metas, nil
}

// Met reports whether a figure meets its target ("<= x", ">= x", "== x").
func (f Figure) Met() (met, known bool) {
	var op string
	var want float64
	if _, err := fmt.Sscanf(f.Target, "%s %g", &op, &want); err != nil {
		return false, false
	}
	switch op {
	case "<=":
		return f.Value <= want, true
	case ">=":
		return f.Value >= want, true
	case "==":
		return f.Value == want, true
	}
	return false, false
}

// Render formats the figures as BENCHMARKS.md: one section per benchmark
// (the command that produced its figures), with its command and method
// once, then a table of its figures. A benchmark whose figures carry
// different notes shows each note once, naming the figures it covers.
func Render(all map[string]Figure) string {
	byCommand := map[string][]string{}
	for n, f := range all {
		byCommand[f.Command] = append(byCommand[f.Command], n)
	}
	commands := make([]string, 0, len(byCommand))
	for c := range byCommand {
		slices.Sort(byCommand[c])
		commands = append(commands, c)
	}
	slices.SortFunc(commands, func(a, b string) int { return strings.Compare(benchmarkName(a), benchmarkName(b)) })
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (and by each benchmark on its own) from `bench/results.json`.\n")
	b.WriteString("Machines here are noisy (2 shared cores): figures are medians and ratios measured side by side\n")
	b.WriteString("in one run, as each benchmark's method says. One section per benchmark:\n\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "- [%s](#%s)\n", benchmarkName(c), strings.ToLower(benchmarkName(c)))
	}
	for _, c := range commands {
		names := byCommand[c]
		fmt.Fprintf(&b, "\n## %s\n\n`%s`\n\n", benchmarkName(c), dash(c))
		var notes []string
		covers := map[string][]string{}
		for _, n := range names {
			note := all[n].Note
			if _, ok := covers[note]; !ok {
				notes = append(notes, note)
			}
			covers[note] = append(covers[note], n)
		}
		for _, note := range notes {
			if note == "" {
				continue
			}
			if len(notes) > 1 {
				fmt.Fprintf(&b, "For %s: ", "`"+strings.Join(covers[note], "`, `")+"`")
			}
			b.WriteString(strings.TrimSuffix(note, ".") + ".\n\n")
		}
		b.WriteString("| Figure | Value | Unit | Target | Met | When |\n|---|---|---|---|---|---|\n")
		for _, n := range names {
			f := all[n]
			met := "-"
			if ok, known := f.Met(); known {
				met = map[bool]string{true: "yes", false: "**no**"}[ok]
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", n, fmtValue(f.Value), f.Unit, dash(f.Target), met, f.When)
		}
	}
	return b.String()
}

// benchmarkName is the test or benchmark a command runs (its -bench or
// -run pattern), or the command itself.
func benchmarkName(command string) string {
	fields := strings.Fields(command)
	name := ""
	for i, f := range fields {
		if (f == "-bench" || f == "-run") && i+1 < len(fields) && strings.Trim(fields[i+1], "'^$") != "" {
			name = strings.Trim(fields[i+1], "'^$")
			if f == "-bench" {
				break
			}
		}
	}
	if name == "" {
		return command
	}
	return name
}

func fmtValue(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprint(int64(v))
	}
	return fmt.Sprintf("%.3g", v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, append(b, '\n'))
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Median returns the median of xs (xs is sorted in place).
func Median(xs []float64) float64 { return Quantile(xs, 0.5) }

// Quantile returns the q-quantile of xs by nearest rank (xs is sorted in
// place). With fewer than 100 samples the p99 is the maximum.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(q*float64(len(xs))+0.999999) - 1
	i = max(0, min(i, len(xs)-1))
	return xs[i]
}
