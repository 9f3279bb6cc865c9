// Package gossip runs hashicorp/memberlist among the Sluice helpers, so that
// every helper knows which Nodes are alive and can compute the same egress-IP
// owner (pkg/election) on its own.
//
// Gossip is encrypted and authenticated (AES-GCM keyring, GossipVerify*
// on). A helper without a key refuses to start unless AllowInsecure is set,
// which only tests do.
//
// # Failure-detection timing
//
// memberlist (SWIM + Lifeguard) declares a member dead in three steps:
//
//  1. Some alive member probes it. Every member probes one peer per
//     ProbeInterval, walking a shuffled list of its n-1 peers, so each of
//     the n-1 survivors reaches the dead member once per n-1 intervals, at
//     a random phase: the first probe comes after the minimum of n-1
//     uniform draws on [0, (n-1)·ProbeInterval).
//
//  2. The probe fails: no direct ack within ProbeTimeout, then no ack through
//     IndirectChecks peers nor through the TCP fallback ping before the end
//     of the ProbeInterval. The member becomes suspect.
//
//  3. Nobody refutes the suspicion for the suspicion timeout:
//
//     min = SuspicionMult * max(1, log10(n)) * ProbeInterval
//     max = SuspicionMaxTimeoutMult * min
//
//     Lifeguard starts the timer at max and shrinks it towards min as
//     k = SuspicionMult-2 independent confirmations arrive; with k < 1 the
//     timer is min from the start. Sluice uses SuspicionMult = 2, so k = 0
//     and the timeout is always min: detection does not wait for a second
//     prober, which on 3 Nodes would take another interval or two.
//
// With the defaults (ProbeInterval 200 ms, ProbeTimeout 100 ms,
// SuspicionMult 2, GossipInterval 50 ms) that gives, from the moment a Node
// dies to the moment the other helpers mark it dead:
//
//	n    suspicion timeout   detection: mean   p99
//	3    400 ms              0.73 s            0.96 s
//	5    400 ms              0.76 s            1.15 s
//	10   400 ms              0.78 s            1.32 s
//	20   520 ms              0.91 s            1.54 s
//	50   679 ms              1.08 s            1.76 s
//
// (DetectionBounds computes these and its test pins this table; the
// loopback unit test measures ≈0.65–1.3 s for n = 4 under -race on a busy
// 2-core box.) The suspect message is gossiped every 50 ms, so all members
// start their own suspicion timer within about 100 ms of each other, and
// the first to declare death gossips it at once. The takeover (add a /32,
// gratuitous ARP) adds milliseconds. That meets the 1.0 s median / 2.0 s
// p99 failover target up to about 20 Nodes (beyond that the median passes
// 1 s); Antrea's LAN defaults (probe 1 s, SuspicionMult 3) take 4–5 s.
//
// # Why 2% packet loss does not cause false failovers
//
// Assume each one-way packet is lost with p = 0.04 (2% on the sender's
// uplink and 2% on the receiver's). A probe only fails if all of these fail
// within one ProbeInterval:
//
//   - the direct ping/ack (2 packets): 1-(0.96)^2 ≈ 0.078;
//   - each indirect ping through a peer (4 packets): ≈ 0.15 each, and there
//     are min(3, n-2) of them: ≈ 0.15 for n = 3, ≈ 0.0034 for n ≥ 5;
//   - the TCP fallback ping (handshake + ping + ack, no time for a TCP
//     retransmission within 200 ms): ≈ 0.15–0.2.
//
// For n = 3 that is ≈ 0.078 × 0.15 × 0.2 ≈ 2e-3 per probe; with 3 members
// × 5 probes/s that is ≈ 100 suspicions per hour (far fewer for n ≥ 5).
// A suspicion is not a failover: the election must count suspect members as
// alive and drop only dead or left ones. A suspicion turns into a false
// "dead" only if a member's suspicion timer (400 ms) runs out before the
// refutation (alive with a higher incarnation) reaches it. Every message is
// gossiped RetransmitMult × ⌈log10(n+1)⌉ = 6 times within ~150 ms, to the
// suspected member directly and through the third member (2 packets). For
// n = 3 the suspected member misses the suspicion with ≈ 0.04^3 × 0.078^3
// ≈ 3e-8, and the refutation is lost with about the same probability, so
// ≈ 6e-8 per suspicion, ≈ 6e-6 per hour: about one false failover in 20
// years of 2% loss. A 10-minute soak should therefore see zero; a single
// false death in it means the model is wrong (e.g. CPU stalls longer than
// the timeout), not bad luck. Lifeguard's awareness adds margin: a member
// whose own probes go unanswered (missing nacks) stretches its probe
// interval up to AwarenessMaxMultiplier times before it accuses others, and
// a member that learns it is suspected refutes at once.
//
// Stalls matter more than loss: a helper frozen for longer than about
// ProbeInterval + suspicion timeout (≈ 0.6 s) is, by design, declared dead.
//
// The kernel test TestKernelLossNoFalseDeath checks this with real loss
// (iptables statistic, 2% on INPUT and OUTPUT of every member's uplink); run
// it with -gossip.soak=10m for the full soak.
//
// The cost is traffic: each member sends about 5 probes and 20 gossip
// packets per second, a few kB/s in total on a small cluster.
package gossip
