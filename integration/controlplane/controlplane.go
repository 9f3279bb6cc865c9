// Package controlplane starts a real etcd and kube-apiserver for a test,
// on loopback or inside a network namespace, and tears them down in the
// right order (apiserver first). The binaries come from
// integration/binaries.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/client-go/rest"

	"github.com/sluicenet/sluice/integration/binaries"
)

// readyTimeout bounds the wait for etcd health and apiserver /readyz.
const readyTimeout = 90 * time.Second

// Options configure Start.
type Options struct {
	// Dir is a scratch directory for data, keys, kubeconfig and logs. It
	// must exist; Stop removes nothing from it.
	Dir string
	// NetNS, when set, is the path of a network namespace (/run/netns/…)
	// in which etcd and kube-apiserver run.
	NetNS string
	// BindAddress is where both listen; default 127.0.0.1. With NetNS it
	// must be an address inside that namespace.
	BindAddress string
	// Controllers also starts kube-controller-manager and kube-scheduler,
	// which a cluster with real kubelets needs: DaemonSets and Deployments,
	// service accounts and the kube-root-ca.crt ConfigMap their tokens
	// carry, and Pods bound to Nodes.
	Controllers bool
}

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string
	// Config is the admin client config. With NetNS its Dial opens sockets
	// inside the namespace, so it works from the test process.
	Config *rest.Config
	// EtcdLog and APIServerLog are the processes' log files; with
	// Options.Controllers, ControllerManagerLog and SchedulerLog too.
	EtcdLog, APIServerLog, ControllerManagerLog, SchedulerLog string

	opts      Options
	l         layout
	kubectl   string
	etcd      *process
	apiserver *process
	kcm       *process
	scheduler *process
}

// Start builds (if needed) and starts etcd, then kube-apiserver, and
// returns once /readyz answers ok. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if opts.Dir == "" {
		return nil, errors.New("controlplane: Options.Dir is required")
	}
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1"
	}
	bins := map[binaries.Tool]string{}
	tools := []binaries.Tool{binaries.Etcd, binaries.KubeAPIServer, binaries.Kubectl}
	if opts.Controllers {
		tools = append(tools, binaries.KubeControllerManager, binaries.KubeScheduler)
	}
	for _, tool := range tools {
		if bins[tool], err = binaries.Ensure(ctx, tool); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	// The ports are free when picked but may be taken by another test
	// binary before etcd or the apiserver binds them: try again then.
	for attempt := 1; ; attempt++ {
		ports, err := portsIn(opts.NetNS, opts.BindAddress)
		if err != nil {
			return nil, err
		}
		cp, err := start(ctx, opts, bins, ports)
		if err == nil || !errors.Is(err, errPortInUse) || attempt == startAttempts {
			return cp, err
		}
		// Our own etcd data from the failed attempt; the member it names
		// has the old peer URL.
		_ = os.RemoveAll(filepath.Join(opts.Dir, "etcd-data"))
	}
}

// startAttempts bounds the retries on a port taken between pick and bind.
const startAttempts = 3

// errPortInUse marks a start that failed because a port was taken.
var errPortInUse = errors.New("address already in use")

// start is one attempt of Start on the given ports.
func start(ctx context.Context, opts Options, bins map[binaries.Tool]string, ports []int) (_ *ControlPlane, err error) {
	l := layout{dir: opts.Dir, host: opts.BindAddress, etcdClient: ports[0], etcdPeer: ports[1], apiPort: ports[2]}
	cp := &ControlPlane{
		Kubeconfig: l.kubeconfig(), EtcdLog: l.etcdLog(), APIServerLog: l.apiserverLog(),
		opts: opts, l: l, kubectl: bins[binaries.Kubectl],
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	token, err := writeCredentials(l)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	dial := dialer(opts.NetNS)

	cp.etcd, err = startProcess("etcd", command(opts.NetNS, bins[binaries.Etcd], etcdArgs(l)), l.etcdLog())
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	plain := &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 5 * time.Second}
	if err := waitOK(ctx, cp.etcd, plain, l.etcdURL()+"/health"); err != nil {
		return nil, fmt.Errorf("controlplane: etcd: %w", err)
	}

	cp.apiserver, err = startProcess("kube-apiserver", command(opts.NetNS, bins[binaries.KubeAPIServer], apiserverArgs(l)), l.apiserverLog())
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	caPEM, err := waitFile(ctx, cp.apiserver, l.servingCert())
	if err != nil {
		return nil, fmt.Errorf("controlplane: kube-apiserver serving cert: %w", err)
	}
	cfg := restConfig(l, token, caPEM)
	if opts.NetNS != "" {
		cfg.Dial = dial
	}
	httpc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: client: %w", err)
	}
	httpc.Timeout = 5 * time.Second
	if err := waitOK(ctx, cp.apiserver, httpc, l.apiURL()+"/readyz"); err != nil {
		return nil, fmt.Errorf("controlplane: kube-apiserver: %w", err)
	}
	cp.Config = cfg
	if err := writeKubeconfig(l.kubeconfig(), cfg); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if opts.Controllers {
		cp.ControllerManagerLog, cp.SchedulerLog = l.kcmLog(), l.schedulerLog()
		if cp.kcm, err = startProcess("kube-controller-manager", command(opts.NetNS, bins[binaries.KubeControllerManager], controllerManagerArgs(l)), l.kcmLog()); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		if cp.scheduler, err = startProcess("kube-scheduler", command(opts.NetNS, bins[binaries.KubeScheduler], schedulerArgs(l)), l.schedulerLog()); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	return cp, nil
}

// Stop ends the controllers, then kube-apiserver (it hangs in shutdown
// for a minute when etcd is gone first), then etcd. It is safe to call
// more than once.
func (cp *ControlPlane) Stop() {
	if cp == nil {
		return
	}
	cp.scheduler.stop()
	cp.kcm.stop()
	cp.apiserver.stop()
	cp.etcd.stop()
}

// URL is the apiserver's https URL.
func (cp *ControlPlane) URL() string { return cp.l.apiURL() }

// portsIn picks etcd client, etcd peer and apiserver ports where the
// processes will listen: in netns when set.
func portsIn(netns, host string) ([]int, error) {
	if netns == "" {
		return freePorts(host, 3)
	}
	var ports []int
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var err error
		ports, err = freePorts(host, 3)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: ports in %s: %w", netns, err)
	}
	return ports, nil
}

// waitOK polls url until it answers 200 "ok", the process dies, or the
// deadline passes.
func waitOK(ctx context.Context, p *process, c *http.Client, url string) error {
	return poll(ctx, p, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK, nil
	})
}

// waitFile waits for a non-empty file that the process writes.
func waitFile(ctx context.Context, p *process, path string) ([]byte, error) {
	var b []byte
	err := poll(ctx, p, func() (bool, error) {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0, nil
	})
	return b, err
}

// poll calls check every 200 ms, at most readyTimeout long.
func poll(ctx context.Context, p *process, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(Tail(p.log, 20), "address already in use") {
				return fmt.Errorf("%s exited: %w (log %s)", p.name, errPortInUse, p.log)
			}
			return fmt.Errorf("%s exited: %v (log %s)", p.name, p.err, p.log)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (log %s)", p.name, ctx.Err(), p.log)
		case <-tick.C:
		}
	}
}
