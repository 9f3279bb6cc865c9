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
