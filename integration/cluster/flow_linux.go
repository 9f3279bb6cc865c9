package cluster

import (
	"context"
	"net/netip"
	"time"
)

// FlowStats is what one long-lived flow saw (KeepFlowing).
type FlowStats struct {
	Asks, OK    int
	Connections int          // connections opened: 1 means the flow never broke
	Wrong       []netip.Addr // sources the server reported other than the one wanted
	LastOK      time.Time
	// MaxGap is the longest time between two answers with the wanted
	// source (a stall), from the first one on.
	MaxGap time.Duration
}

// KeepFlowing holds a long-lived connection from p to the server's stream
// port and asks it the source it sees every 50 ms until ctx ends. A failed
// ask (an error, or no answer within a second) closes the connection and
// opens a new one, at most every 200 ms. The stats come on the channel
// once ctx ends. With an invalid want, every answer counts as wanted (the
// caller checks the sources on the wire).
func (e *Ext) KeepFlowing(ctx context.Context, p *Pod, want netip.Addr) <-chan FlowStats {
	out := make(chan FlowStats, 1)
	go func() {
		var st FlowStats
		var s *Stream
		defer func() {
			if s != nil {
				s.Close()
			}
			out <- st
		}()
		for ctx.Err() == nil {
			if s == nil {
				dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				var err error
				s, err = e.OpenStream(dctx, p)
				cancel()
				if err != nil {
					s = nil
					time.Sleep(200 * time.Millisecond)
					continue
				}
				st.Connections++
			}
			st.Asks++
			got, err := s.Ask(time.Second)
			switch {
			case err != nil:
				s.Close()
				s = nil
			case want.IsValid() && got != want:
				st.Wrong = append(st.Wrong, got)
			default:
				now := time.Now()
				if !st.LastOK.IsZero() && now.Sub(st.LastOK) > st.MaxGap {
					st.MaxGap = now.Sub(st.LastOK)
				}
				st.OK++
				st.LastOK = now
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return out
}

// Flow is one long-lived connection of a rolling restart: a Pod and the
// source it must keep.
type Flow struct {
	Pod *Pod
	IP  netip.Addr
}

// RollingRestart is what RestartUnderFlows saw.
type RollingRestart struct {
	Stats   []FlowStats // one per flow, in order
	Start   string      // the IPs' holders before (Placement)
	Moves   []string    // every change of the holders meanwhile, timed
	Samples int         // holder samples taken, one per 100 ms
}

// RestartUnderFlows keeps every flow going to the external server (as
// KeepFlowing) and watches the holders of ips; after warm it restarts every
// Node's helper in turn with SIGTERM and then every one with SIGKILL (each
// down 1 s, 2 s apart), as a DaemonSet rolling update and a crash do.
func (c *Cluster) RestartUnderFlows(ctx context.Context, ext *Ext, flows []Flow, ips []netip.Addr, warm time.Duration) (RollingRestart, error) {
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	placement := c.watchPlacement(fctx, ips, 100*time.Millisecond)
	results := make([]<-chan FlowStats, len(flows))
	for i, f := range flows {
		results[i] = ext.KeepFlowing(fctx, f.Pod, f.IP)
	}
	time.Sleep(warm)
	var err error
	for _, kill := range []bool{false, true} {
		if err = c.RestartEach(ctx, kill, time.Second, 2*time.Second); err != nil {
			break
		}
	}
	stop()
	r := RollingRestart{Start: placement.Start}
	r.Moves, r.Samples = placement.wait()
	for _, ch := range results {
		r.Stats = append(r.Stats, <-ch)
	}
	return r, err
}
