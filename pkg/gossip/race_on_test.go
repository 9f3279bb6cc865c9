//go:build race

package gossip

// raceEnabled: the binary runs under the race detector, which slows every
// member process 5-10x.
const raceEnabled = true
