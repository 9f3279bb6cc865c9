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
//     k = SuspicionMult-2 independent confirmations (other members that
//     also failed to reach it) arrive. Sluice uses SuspicionMult = 3, so
//     k = 1: a really dead member is confirmed by a second survivor well
//     within the minimum and dies after min = 450 ms, while a lone
//     accuser (its own packets lost, or the target briefly starved of CPU)
//     gives the target max = 4 × 450 ms = 1.8 s to refute. With fewer than
//     3 members memberlist expects no confirmation and uses min.
//
// With the defaults (ProbeInterval 150 ms, ProbeTimeout 80 ms,
// SuspicionMult 3, SuspicionMaxTimeoutMult 4, GossipInterval 50 ms) that
// gives, from the moment a Node dies to the moment the others mark it dead:
//
//	n    suspicion min / max   detection: mean   p99
//	2    450 ms / 450 ms       0.68 s            0.75 s
//	3    450 ms / 1.8 s        0.70 s            0.87 s
//	5    450 ms / 1.8 s        0.72 s            1.01 s
//	10   450 ms / 1.8 s        0.74 s            1.14 s
//	20   585 ms / 2.3 s        0.88 s            1.35 s
//	50   764 ms / 3.1 s        1.06 s            1.57 s
//
// (DetectionBounds computes these and its test pins this table.) Measured:
// TestKernelKillDetection (3 member processes in namespaces, SIGKILL, time
// until every survivor reports the victim dead) gave 0.6–0.9 s, with a
// median of 0.75–0.83 s over runs, on a 2-core box at load average 14–16
// (about 0.1 s above the model: gossip lag and scheduling); the loopback
// unit test gives 0.65–0.8 s, up to 2.4 s under -race. The suspect
// message is gossiped every 50 ms, so the survivors agree within about
// 100 ms, and the first to declare death gossips it at once. The takeover
// (add a /32, gratuitous ARP) adds milliseconds. That meets the 1.0 s median / 2.0 s p99 failover target up
// to about 20 Nodes (beyond that the median passes 1 s); Antrea's LAN
// defaults (probe 1 s, SuspicionMult 3) take 4–5 s.
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
//     retransmission within 150 ms): ≈ 0.15–0.2.
//
// For n = 3 that is ≈ 0.078 × 0.15 × 0.2 ≈ 2e-3 per probe; with 3 members
// × 6.7 probes/s that is ≈ 150 suspicions per hour (far fewer for n ≥ 5;
// the kernel test sees 0–2 per minute). A suspicion is not a failover: the
// election must count suspect members as alive (memberlist reports them
// alive anyway, see State). A suspicion becomes a false death only if
//
//   - a second member independently fails a whole probe of the same member
//     within the 450 ms minimum (≈ 2e-3 × 3 probes ≈ 6e-3), and the
//     suspected member's refutation is lost for 450 ms; or
//   - the refutation is lost for the full 1.8 s unconfirmed timeout.
//
// The refutation (alive with a higher incarnation) is gossiped
// RetransmitMult × ⌈log10(n+1)⌉ = 6 times within ~150 ms, directly and
// through the third member, and the accuser also pushes the suspicion to
// the suspect with each further probe, so losing it for 450 ms takes ≈ 10
// consecutive losses (0.04^10 ≈ 1e-14). Together: far below one false death
// per year of 2% loss, so a 10-minute soak must see zero.
//
// Stalls matter more than loss. If all members are starved of CPU at once
// for longer than the probe interval plus the minimum timeout (≈ 0.6 s)
// they accuse each other, confirm each other, and a healthy member can be
// declared dead. The kernel soak skips under -race for this reason: the
// race detector made the three member processes slow enough, on a 2-core
// box at load average 16, to produce exactly that. Uninstrumented, the same
// box passes it. Lifeguard's awareness helps: a member whose own probes go
// unanswered (missing nacks) stretches its probe interval and timeouts up
// to AwarenessMaxMultiplier times before it accuses others.
//
// The kernel test TestKernelLossNoFalseDeath checks this with real loss
// (iptables statistic, 2% on INPUT and OUTPUT of every member's uplink, in
// the member namespaces); run it for the full soak with
//
//	go test -run TestKernelLossNoFalseDeath -timeout 15m ./pkg/gossip -args -gossip.soak=10m
//
// The cost is traffic: each member sends about 7 probes (plus acks) and,
// while there is news, 20 gossip packets per second: a few kB/s in total
// on a small cluster.
package gossip
