package fleetsim

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/plan"
)

// herd restarts etcd and measures how the fleet comes back: every
// client reconnects, every watch resumes (a change applied right after
// etcd answered reaches every host), how many hosts re-read everything,
// and the peak request rate, from the clients' side and from etcd's own
// metrics.
func (s *Sim) herd(ctx context.Context, extra []eniRef) (*Herd, error) {
	hd := &Herd{PeakServerRPS: -1}
	t, err := s.fleet.topology(extra, true)
	if err != nil {
		return nil, err
	}
	var reads0 int64
	for _, h := range s.hosts {
		reads0 += h.m.Stats().FullReads
	}
	last := extra[len(extra)-1]

	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		prev, pt := s.requests(), time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-tick.C:
				r := s.requests()
				rate := float64(r-prev) / now.Sub(pt).Seconds()
				prev, pt = r, now
				mu.Lock()
				hd.PeakClientRPS = max(hd.PeakClientRPS, rate)
				mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		hc, err := s.metricsClient()
		if err != nil {
			return
		}
		defer hc.CloseIdleConnections()
		prev, pt, have := 0.0, time.Now(), false
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-tick.C:
				v, err := s.serverMessages(sctx, hc)
				if err != nil {
					have = false // etcd is away; its counters restart with it
					continue
				}
				if have {
					d := v - prev
					if d < 0 {
						d = v // etcd restarted between two samples
					}
					mu.Lock()
					hd.PeakServerRPS = max(hd.PeakServerRPS, d/now.Sub(pt).Seconds())
					mu.Unlock()
				}
				prev, pt, have = v, now, true
			}
		}
	}()
	defer func() { stopSampling(); wg.Wait() }()

	runtime.GC() // as before a change
	s.log.Info("restarting etcd", "hosts", len(s.hosts))
	start := time.Now()
	if err := s.cfg.Restart(ctx); err != nil {
		return nil, fmt.Errorf("fleet-sim: restart etcd: %w", err)
	}
	up := time.Now()
	hd.RestartMs = ms(up.Sub(start))

	pr := s.newProbe(func(h *simHost, p *plan.Host) bool {
		for _, r := range p.Datapath.Routes {
			if r.IP == last.ip && r.VNI == uint32(1000+last.vpc) {
				return true
			}
		}
		return false
	})
	deadline := up.Add(s.cfg.Timeout)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := controlplane.Apply(actx, s.driver, s.prefix, t, true, false)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("fleet-sim: apply after the restart: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var reconnected time.Time
	werr := s.wait(ctx, func() bool {
		if reconnected.IsZero() {
			all := true
			for _, h := range s.hosts {
				if !h.m.Stats().Connected {
					all = false
					break
				}
			}
			if all {
				reconnected = time.Now()
			}
		}
		return !reconnected.IsZero() && pr.hits.Load() == int64(len(s.hosts))
	})
	var lastHit time.Time
	for _, h := range s.hosts {
		v := h.view()
		if v.probeID == pr.id {
			hd.Resumed++
			if v.probeAt.After(lastHit) {
				lastHit = v.probeAt
			}
		}
		hd.FullReads += h.m.Stats().FullReads
	}
	hd.FullReads -= reads0
	if !reconnected.IsZero() {
		hd.ReconnectMs = ms(max(0, reconnected.Sub(up)))
	}
	if !lastHit.IsZero() {
		hd.ResumeMs = ms(lastHit.Sub(up))
	}
	// A little more sampling: the tail of the reconnections.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if resp, err := s.driver.Get(gctx, strings.TrimRight(s.prefix, "/")+"/hosts/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		hd.Registrations = int(resp.Count)
	}
	s.log.Info("herd over", "restart_ms", hd.RestartMs, "reconnect_ms", hd.ReconnectMs, "resume_ms", hd.ResumeMs,
		"full_reads", hd.FullReads, "peak_client_rps", hd.PeakClientRPS, "peak_server_rps", hd.PeakServerRPS)
	if werr != nil {
		return hd, fmt.Errorf("fleet-sim: herd: %d of %d hosts resumed: %w%s", hd.Resumed, len(s.hosts), werr, s.errSample())
	}
	return hd, nil
}

// metricsClient reads etcd's /metrics on its (first) client URL.
func (s *Sim) metricsClient() (*http.Client, error) {
	tlsCfg, err := s.cfg.Etcd.TLS()
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}, nil
}

// serverMessages is etcd's count of gRPC messages received from clients
// (grpc_server_msg_received_total, every service and method).
func (s *Sim) serverMessages(ctx context.Context, hc *http.Client) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.cfg.Etcd.Endpoints[0], "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("etcd /metrics: %s", resp.Status)
	}
	total, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			total += v
			found = true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("etcd /metrics: no grpc_server_msg_received_total")
	}
	return total, nil
}

// limits says, from the measurements, what bounds convergence here.
func (s *Sim) limits(r *Result) string {
	n := float64(r.Hosts)
	planCPU := n * r.PlanMs
	var b strings.Builder
	fmt.Fprintf(&b, "every host watches the whole prefix and plans the whole topology on each change: "+
		"%d hosts × %.2f ms per plan = %.0f ms of CPU per change, on this machine's shared cores in the simulation (each host's own CPU in a real fleet)", r.Hosts, r.PlanMs, planCPU)
	if r.SharedAssembly {
		fmt.Fprintf(&b, "; decoding and validating a state takes %.1f ms, once per revision here (shared) and once per host per change in a real fleet", r.AssembleMs)
	}
	fmt.Fprintf(&b, "; etcd fans every change out to %d watchers", r.Hosts)
	return b.String()
}
