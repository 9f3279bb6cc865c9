// Package daemon assembles sluice-helperd from its parts and runs it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sluicenet/sluice/helperd/agent"
	"github.com/sluicenet/sluice/helperd/alloc"
	"github.com/sluicenet/sluice/helperd/config"
	"github.com/sluicenet/sluice/helperd/hint"
	"github.com/sluicenet/sluice/helperd/inspect"
	"github.com/sluicenet/sluice/helperd/view"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	"github.com/sluicenet/sluice/pkg/cniplugin"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/garp"
	"github.com/sluicenet/sluice/pkg/gossip"
	"github.com/sluicenet/sluice/pkg/iptbackend"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

// Gratuitous ARP on takeover: three announcements 100 ms apart. The first
// moves every neighbour that hears it; the later ones cover a lost frame
// without stretching the failover (antrea#5117 shows the 15 s outage when
// there are none).
const (
	garpCount    = 3
	garpInterval = 100 * time.Millisecond
)

// Run runs the helper until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	rc, err := restConfig(cfg.Kubeconfig, float32(cfg.KubeAPIQPS), cfg.KubeAPIBurst)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	sl, err := versioned.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("sluice client: %w", err)
	}
	nodeIP, err := waitNodeIP(ctx, kube, cfg.NodeName)
	if err != nil {
		return err
	}
	uplink := cfg.Uplink
	if uplink == "" {
		if uplink, err = view.UplinkFor(nodeIP); err != nil {
			return err
		}
	}
	backend, err := iptbackend.Detect(iptbackend.Exec)
	if err != nil {
		return fmt.Errorf("choose the iptables backend: %w", err)
	}
	log.Info("iptables backend", "mode", backend.Mode, "why", backend.Reason)
	dcfg := datapathConfig(cfg, uplink, nodeIP, backend)
	dp, err := datapath.New(dcfg, log.With("part", "datapath"))
	if err != nil {
		return err
	}
	prevIDs, err := dp.CurrentIDs(ctx)
	if err != nil {
		log.Warn("read mark ids from the kernel", "err", err)
	}
	kept := map[netip.Addr]bool{}
	if held, err := dp.HeldIPs(); err != nil {
		log.Warn("read held egress IPs from the kernel", "err", err)
	} else {
		for _, ip := range held {
			kept[ip] = true
		}
	}
	log.Info("starting", "node", cfg.NodeName, "nodeIP", nodeIP, "uplink", uplink, "ids", len(prevIDs), "held", len(kept))

	reg := prometheus.NewRegistry()
	metrics := agent.NewMetrics(reg)
	collector := &agent.Collector{Datapath: dp}
	reg.MustRegister(collector)
	recorder := eventRecorder(kube, cfg.NodeName)

	cache := view.New(kube, sl)
	// The informers outlive the stop signal, until Run returns: a helper
	// stopped in the middle of a planned move waits in its cache for the
	// move's claim (Agent.finishOnStop).
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	if err := cache.Start(cacheCtx); err != nil {
		return err
	}
	keys, err := readKeys(cfg.GossipKeyFile)
	if err != nil {
		return err
	}
	g, err := startGossip(ctx, cfg, nodeIP, macOf(uplink), keys, cache, log)
	if err != nil {
		return err
	}
	defer leave(g, log)
	reg.MustRegister(&agent.MemberCollector{Members: g})

	var hintKeys *hint.Keyring // nil: unsigned hints (--gossip-insecure)
	if len(keys) > 0 {
		if hintKeys, err = hint.NewKeyring(keys); err != nil {
			return err
		}
		w := newKeyWatcher(cfg.GossipKeyFile, g, hintKeys, reg, log.With("part", "keys"))
		w.start(keys)
		go w.run(ctx)
	}
	a, err := agent.New(agent.Config{Self: cfg.NodeName, NodeIP: nodeIP, Log: log.With("part", "agent"), Cache: cache,
		Datapath: dp, Members: g, Election: cfg.Election(), Resync: cfg.Resync, PrevIDs: prevIDs,
		Metrics:    metrics,
		HintClient: &hint.Client{Keys: hintKeys, HTTP: hintHTTP(nodeIP)}, HintPort: cfg.HintPort,
		ClusterCIDRs: cfg.ClusterCIDRs,
		Allocator:    &alloc.Allocator{Client: sl, Recorder: recorder, NodeIPs: cache.NodeIPs, ClusterCIDRs: cfg.ClusterCIDRs},
		Status:       &agent.StatusWriter{Self: cfg.NodeName, Client: sl, Cache: cache, Recorder: recorder, Metrics: metrics},
		Probe: func(ctx context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			found, err := garp.Probe(ctx, uplink, ips, func(mac net.HardwareAddr) bool {
				for _, m := range g.Members() { // alive or dead: a stale holder still answers until fenced
					if m.MAC != "" && m.MAC == mac.String() {
						return true
					}
				}
				return false
			})
			out := make(map[netip.Addr]string, len(found))
			for ip, mac := range found {
				out[ip] = "the host at MAC " + mac.String()
			}
			return out, err
		},
		Grace: cfg.RestartGrace, Kept: kept,
		KernelProbe: func(ctx context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			found, err := garp.Probe(ctx, uplink, ips, func(net.HardwareAddr) bool { return false })
			out := make(map[netip.Addr]string, len(found))
			for ip, mac := range found {
				out[ip] = mac.String()
			}
			return out, err
		},
		Announce: func(ctx context.Context, ip netip.Addr) {
			if err := garp.Announce(ctx, uplink, ip, garpCount, garpInterval); err != nil {
				log.Warn("gratuitous ARP", "ip", ip, "err", err)
			}
		},
		RegistryLog: log.With("part", "registry"),
	})
	if err != nil {
		return err
	}
	collector.Agent = a

	errc := make(chan error, 8)
	run := func(name string, fn func() error) {
		go func() {
			if err := fn(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if _, err := view.RefreshAddrs(cache, dcfg.WithDefaults().Label(), dcfg.WithDefaults().TunnelDev); err != nil {
		return err
	}
	// The kernel's Pods first, so that the agent's first plan has them all.
	found, err := a.Registry.StartFromKernel(ctx)
	if err != nil {
		log.Warn("registry start", "err", err)
	}
	agentDone := make(chan struct{})
	run("agent", func() error { defer close(agentDone); return a.Run(ctx) })
	go func() {
		// Without a change source the periodic resync still repairs the
		// jumps, only later.
		if err := dp.WatchJumps(ctx); err != nil {
			log.Warn("watch for rules inserted ahead of Sluice's jumps", "err", err)
		}
	}()
	run("addresses", func() error {
		return view.WatchAddrs(ctx, cache, dcfg.WithDefaults().Label(), dcfg.WithDefaults().TunnelDev, a.Poke)
	})
	if err := a.Registry.FinishStart(ctx, cfg.SpoolDir, found); err != nil {
		log.Warn("registry start", "err", err)
	}
	go a.Registry.WatchSpool(ctx, cfg.SpoolDir, spoolWatchEvery)
	ln, err := cniproto.Listen(cfg.CNISocket)
	if err != nil {
		return err
	}
	run("cni socket", func() error {
		clog := log.With("part", "cni")
		return (&cniproto.Server{Handler: a.Registry, Exec: &cniplugin.InProcess{Handler: a.Registry, Socket: cfg.CNISocket, Log: clog},
			Log: clog}).Serve(ctx, ln)
	})
	run("hints", func() error {
		return (&hint.Server{Addr: netip.AddrPortFrom(nodeIP, uint16(cfg.HintPort)).String(), Self: nodeIP, Keys: hintKeys,
			IsNode: func(name string, ip netip.Addr) bool {
				n, ok := cache.Nodes()[name]
				return ok && n.IP == ip
			},
			Receive: a.ReceiveHint, Observe: metrics.ObserveHint}).Serve(ctx)
	})
	run("status socket", func() error {
		return (&inspect.Server{Path: cfg.StatusSocket, Source: &inspect.State{Self: cfg.NodeName, Plan: a.LastPlan, Attachments: a.Registry,
			Cache: cache, Counters: dp, Config: dcfg.WithDefaults()},
			Log: log}).Serve(ctx)
	})
	if cfg.MetricsAddr != "" {
		run("metrics", func() error { return serveMetrics(ctx, metricsAddr(cfg.MetricsAddr, nodeIP), reg, a) })
	}
	select {
	case <-ctx.Done():
		// The agent may still be ending a planned move under way
		// (Agent.finishOnStop): leave gossip only after it.
		select {
		case <-agentDone:
		case <-time.After(2 * agent.StopFinishFor): // its bound, and an Apply under way
		}
		return nil
	case err := <-errc:
		return err
	}
}

// inClusterConfig is rest.InClusterConfig (a variable for tests).
var inClusterConfig = rest.InClusterConfig

// restConfig is the API client's configuration, from kubeconfig or, when
// that is empty, from the Pod's service account, with the same rate limit
// (qps, burst) either way.
func restConfig(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		if rc, err = inClusterConfig(); err != nil {
			return nil, fmt.Errorf("--kubeconfig: not given and not in a cluster: %w", err)
		}
	} else if rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	rc.QPS, rc.Burst = qps, burst
	return rc, nil
}

// waitNodeIP reads this Node's InternalIP, waiting for the Node object.
func waitNodeIP(ctx context.Context, kube kubernetes.Interface, name string) (netip.Addr, error) {
	for {
		n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if ip := view.NodeIP(n); ip.IsValid() {
				return ip, nil
			}
			err = errors.New("it has no InternalIP yet")
		}
		slog.Info("waiting for this Node", "node", name, "err", err)
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("node %s: %w", name, err)
		case <-time.After(time.Second):
		}
	}
}

func startGossip(ctx context.Context, cfg *config.Config, nodeIP netip.Addr, uplinkMAC string, keys [][]byte, cache *view.Cache, log *slog.Logger) (*gossip.Gossip, error) {
	gc := gossip.Config{NodeName: cfg.NodeName, BindAddr: nodeIP, BindPort: cfg.GossipPort, AllowInsecure: cfg.GossipInsecure, MAC: uplinkMAC}
	if len(keys) > 0 {
		gc.SecretKey, gc.OtherKeys = keys[0], keys[1:]
	}
	g, err := gossip.New(gc, log.With("part", "gossip"))
	if err != nil {
		return nil, err
	}
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	join := func() {
		var peers []string
		for name, n := range cache.Nodes() {
			if name != cfg.NodeName && n.IP.IsValid() {
				peers = append(peers, netip.AddrPortFrom(n.IP, uint16(cfg.GossipPort)).String())
			}
		}
		if len(peers) > 0 {
			_, _ = g.Join(peers)
		}
	}
	join()
	// Nodes come and go: keep the peer list in step (next join in 10 s).
	go func() {
		_ = wait.PollUntilContextCancel(ctx, 10*time.Second, false, func(context.Context) (bool, error) {
			join()
			return false, nil
		})
	}()
	return g, nil
}

// spoolWatchEvery is how often the plugin's spool is replayed while the
// helper runs.
const spoolWatchEvery = time.Second

// macOf is the interface's MAC, or "" when it cannot be read.
func macOf(name string) string {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	return ifi.HardwareAddr.String()
}

// datapathConfig is the datapath's part of the helper's flags. The
// datapath reads the kernel back in full (which repairs drift) once its
// record is 1.5 × --resync old: at the second periodic reconcile after the
// last read at the latest, so drift lasts at most two periods. (At the
// default 2 s that is datapath.DefaultResync, 3 s.)
func datapathConfig(cfg *config.Config, uplink string, nodeIP netip.Addr, backend iptbackend.Backend) datapath.Config {
	return datapath.Config{TunnelDev: cfg.TunnelDev, TunnelPort: cfg.TunnelPort, VNI: cfg.VNI,
		Uplink: uplink, NodeIP: nodeIP, ClusterCIDRs: cfg.Excluded(), IPTables: backend,
		HeldLifetime: heldLifetime(cfg.EffectiveHeldLifetime()), ResyncPeriod: cfg.Resync * 3 / 2}
}

// heldLifetime maps the flag (0: forever) to datapath.Config.HeldLifetime
// (negative: forever).
func heldLifetime(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// hintHTTP sends hints from the Node IP, the only source the receiving
// helper accepts for this Node's hints (an egress IP held on the uplink
// could otherwise be picked as the source).
func hintHTTP(nodeIP netip.Addr) *http.Client {
	d := &net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(nodeIP, 0))}
	return &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DialContext: d.DialContext,
		MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}
}

func leave(g *gossip.Gossip, log *slog.Logger) {
	if err := g.Leave(time.Second); err != nil {
		log.Warn("gossip leave", "err", err)
	}
	_ = g.Shutdown()
}

func eventRecorder(kube kubernetes.Interface, node string) record.EventRecorder {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return b.NewRecorder(scheme, corev1.EventSource{Component: "sluice-helperd", Host: node})
}

// Limits of the metrics endpoint. A client gets a few seconds to send its
// headers; at most metricsPerSource connections per source address and
// metricsMaxConns in all are open at once, and a connection past either is
// closed as soon as it is accepted (it does not wait behind idle ones). So
// idle or slow connections cannot grow the helper's memory (4,000 idle
// connections once raised RSS from 39 to 122 MiB), and a flood from one Pod
// cannot keep the kubelet's probes or Prometheus from getting through.
const (
	metricsMaxConns      = 64
	metricsPerSource     = 8
	metricsHeaderTimeout = 2 * time.Second
	metricsIdleTimeout   = 15 * time.Second
)

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, a *agent.Agent) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	srv := metricsServer(reg, a.Ready)
	go func() { <-ctx.Done(); _ = srv.Close() }()
	shed := newShedListener(ln, metricsMaxConns, metricsPerSource)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_metrics_connections_shed_total",
		Help: "Connections to this endpoint closed on accept: past 64 open, or past 8 from one address."},
		func() float64 { return float64(shed.Denied.Load()) }))
	if err := srv.Serve(shed); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func metricsServer(reg *prometheus.Registry, ready func() bool) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Timeout: 8 * time.Second}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not reconciled yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: metricsHeaderTimeout, ReadTimeout: 5 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: metricsIdleTimeout, MaxHeaderBytes: 8 << 10}
}

// metricsAddr puts the Node IP in place of the host "node-ip" (the
// default), so the endpoint is not on every address of the Node.
func metricsAddr(addr string, nodeIP netip.Addr) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == config.NodeIPHost {
		return net.JoinHostPort(nodeIP.String(), port)
	}
	return addr
}
