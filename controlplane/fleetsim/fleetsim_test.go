package fleetsim

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/vpcd/vpcd/controlplane/etcdtest"
)

// A small fleet against a real etcd: every host converges on the base,
// on a new ENI (every host needs its route) and on a security-group rule
// (only the hosts with an ENI in the group), and comes back after etcd
// restarts without re-reading everything.
func TestFleetSim(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := Config{
		Etcd:    srv.Config(),
		Prefix:  "/eb-fleetsim-test",
		Hosts:   20,
		Timeout: time.Minute,
		Restart: func(context.Context) error { srv.Stop(); srv.Restart(); return nil },
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.BaseReads != 20 {
		t.Errorf("base: %d full reads, want one per host (20)", res.BaseReads)
	}
	if len(res.Changes) != 2 {
		t.Fatalf("%d changes measured, want 2", len(res.Changes))
	}
	wantNeed := map[string]int{"new ENI": 20, "security-group rule": 0}
	for _, e := range (fleet{20, 2, 4}).enis() {
		if e.group == "app-0" {
			wantNeed["security-group rule"]++ // hosts have at most one ENI in v0 with K=2, VPCs=4
		}
	}
	for _, c := range res.Changes {
		if c.Needed != wantNeed[c.Name] || c.Converged != c.Needed || c.Changed != c.Needed {
			t.Errorf("%s: needed %d (want %d), converged %d, changed %d", c.Name, c.Needed, wantNeed[c.Name], c.Converged, c.Changed)
		}
		if c.MaxMs <= 0 || c.P50Ms > c.P99Ms || c.P99Ms > c.MaxMs {
			t.Errorf("%s: latencies p50 %v p99 %v max %v", c.Name, c.P50Ms, c.P99Ms, c.MaxMs)
		}
		if c.EventsPerHost < 1 {
			t.Errorf("%s: %v watch events per host, want ≥ 1", c.Name, c.EventsPerHost)
		}
	}
	h := res.Herd
	if h == nil {
		t.Fatal("no herd measurement")
	}
	if h.Resumed != 20 || h.Registrations != 20 {
		t.Errorf("herd: %d hosts resumed, %d registrations, want 20 and 20", h.Resumed, h.Registrations)
	}
	if res.MemPerHost <= 0 || res.PlanErrors != 0 {
		t.Errorf("heap per host %d, plan errors %d", res.MemPerHost, res.PlanErrors)
	}
	t.Logf("%+v", *res)
	for _, c := range res.Changes {
		t.Logf("%+v", c)
	}
	t.Logf("herd %+v", *h)
}
