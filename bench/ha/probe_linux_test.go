package habench

import (
	"bufio"
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sluicenet/sluice/integration/cluster"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The probe opens a fresh short TCP connection to the external whoami
// server every probeInterval (50 requests/s) and gives each probeTimeout.
// Each request runs on its own goroutine, so a lost SYN (whose kernel
// retransmit would come only after 1 s) costs that one request and never
// delays the next: at most probeTimeout/probeInterval are in flight.
const (
	probeInterval = 20 * time.Millisecond
	probeTimeout  = 150 * time.Millisecond
	probeNote     = "probe: fresh TCP connection to the external whoami server every 20 ms (50/s), 150 ms timeout each, from a Pod on a non-owner Node"
)

type probe struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []Sample
}

// startProbe starts probing from p to addr until stop (or ctx ends).
func startProbe(ctx context.Context, p *cluster.Pod, addr string) *probe {
	ctx, cancel := context.WithCancel(ctx)
	pr := &probe{cancel: cancel}
	pr.wg.Add(1)
	go func() {
		defer pr.wg.Done()
		// Non-sliding: one probe starts every interval, however long
		// each takes.
		wait.NonSlidingUntilWithContext(ctx, func(context.Context) {
			pr.wg.Add(1)
			go func() {
				defer pr.wg.Done()
				s := ask(p, addr)
				pr.mu.Lock()
				pr.samples = append(pr.samples, s)
				pr.mu.Unlock()
			}()
		}, probeInterval)
	}()
	return pr
}

// snapshot returns the samples so far.
func (pr *probe) snapshot() []Sample {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]Sample(nil), pr.samples...)
}

// stop ends the probe, waits for requests in flight and returns the trace.
func (pr *probe) stop() []Sample {
	pr.cancel()
	pr.wg.Wait()
	return pr.snapshot()
}

// ask is one probe request.
func ask(p *cluster.Pod, addr string) Sample {
	s := Sample{Sent: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	conn, err := p.Dial(ctx, addr)
	if err != nil {
		s.Done = time.Now()
		return s
	}
	defer conn.Close()
	_ = conn.SetDeadline(s.Sent.Add(probeTimeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	s.Done = time.Now()
	if err == nil {
		s.Src, _ = netip.ParseAddr(strings.TrimSpace(line))
	}
	return s
}
