// Package attack holds adversary scenarios run against a live test cluster,
// shared by the end-to-end tests (which assert on them) and the benchmarks
// (which report their figures).
package attack
