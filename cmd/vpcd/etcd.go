package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vpcd/vpcd/controlplane"
	"github.com/vpcd/vpcd/topology"
)

// etcdFlags are the flags every etcd-mode command shares (SPEC §11).
type etcdFlags struct {
	endpoints, prefix string
	ca, cert, key     string
	timeout           time.Duration
}

func addEtcdFlags(fs *flag.FlagSet) *etcdFlags {
	f := &etcdFlags{}
	fs.StringVar(&f.endpoints, "etcd", "", "etcd client URLs, comma-separated (required)")
	fs.StringVar(&f.prefix, "etcd-prefix", controlplane.DefaultPrefix, "key prefix of this vpcd fleet in etcd")
	fs.StringVar(&f.ca, "etcd-ca", "", "CA certificate (PEM) that signed etcd's server certificate")
	fs.StringVar(&f.cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&f.key, "etcd-key", "", "client private key (PEM) for etcd")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up on etcd after this long")
	return f
}

func (f *etcdFlags) config() (controlplane.Config, error) {
	eps := controlplane.SplitEndpoints(f.endpoints)
	if len(eps) == 0 {
		return controlplane.Config{}, errors.New("--etcd is required")
	}
	return controlplane.Config{Endpoints: eps, CAFile: f.ca, CertFile: f.cert, KeyFile: f.key}, nil
}

func cmdApply(args []string) error {
	fs := newFlags("apply", "apply --etcd URLS [--etcd-prefix P] -f FILE [--prune] [--dry-run]")
	ef := addEtcdFlags(fs)
	file := fs.String("f", "", "topology file to apply (required)")
	prune := fs.Bool("prune", false, "delete objects etcd holds that FILE does not name")
	dry := fs.Bool("dry-run", false, "print what would change, write nothing")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("apply: -f FILE is required")
	}
	cfg, err := ef.config()
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	// Exactly as validate: same lines, exit 1, etcd never contacted.
	// Only a file whose every error is a reference to an unknown ENI
	// may name containers' ENIs, which etcd holds (withDynamicENIs).
	top, err := topology.Load(*file)
	if err != nil && !onlyUnknownENIs(err) {
		printTopologyErrors(*file, err)
		return exitError{1}
	}
	cli, cerr := cfg.Client()
	if cerr != nil {
		return fmt.Errorf("apply: %w", cerr)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ef.timeout)
	defer cancel()
	if err != nil {
		if top = withDynamicENIs(ctx, cli, ef.prefix, *file); top == nil {
			printTopologyErrors(*file, err)
			return exitError{1}
		}
	}
	ch, err := controlplane.Apply(ctx, cli, ef.prefix, top, *prune, *dry)
	var me *controlplane.MergeError
	if errors.As(err, &me) {
		fmt.Fprintln(os.Stderr, "vpcd: apply: "+strings.SplitN(me.Error(), "\n", 2)[0])
		printTopologyErrors(*file, me.Err)
		return exitError{1}
	}
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	for _, r := range ch.Created {
		fmt.Println("created", r)
	}
	for _, r := range ch.Changed {
		fmt.Println("changed", r)
	}
	for _, r := range ch.Deleted {
		fmt.Println("deleted", r)
	}
	switch {
	case *dry:
		fmt.Printf("dry run: %d created, %d changed, %d deleted; nothing written\n", len(ch.Created), len(ch.Changed), len(ch.Deleted))
	case ch.Generation == 0:
		fmt.Println("no change")
	default:
		fmt.Printf("%d created, %d changed, %d deleted: generation %d at revision %d\n",
			len(ch.Created), len(ch.Changed), len(ch.Deleted), ch.Generation, ch.Revision)
	}
	return nil
}

func cmdGet(args []string) error {
	fs := newFlags("get", "get --etcd URLS [--etcd-prefix P] KIND [NAME] [--json]\n\nKIND: "+strings.Join(controlplane.GetKinds, ", "))
	ef := addEtcdFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		fs.SetOutput(os.Stderr)
		fmt.Fprintln(os.Stderr, "vpcd: get: want KIND [NAME] (see vpcd get --help)")
		return exitError{2}
	}
	kind, name := pos[0], ""
	if len(pos) == 2 {
		name = pos[1]
	}
	// Accept the file's spelling too: security_groups, network_acls...
	kind = strings.ReplaceAll(kind, "_", "-")
	cfg, err := ef.config()
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	cli, err := cfg.Client()
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ef.timeout)
	defer cancel()
	res, err := controlplane.Get(ctx, cli, ef.prefix, kind, name)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if name != "" && len(res.Items) == 0 {
		return fmt.Errorf("get: %s %q is not in etcd", kind, name)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	if kind == controlplane.KindHosts {
		fmt.Fprintln(w, "NAME\tLIVE\tUNDERLAY_IP\tPORT\tMTU\tPUBLIC_KEY")
		for _, it := range res.Items {
			var cfgHost topology.Host
			if it.Spec != nil {
				json.Unmarshal(it.Spec, &cfgHost)
			}
			ip, port, mtu, key := cfgHost.UnderlayIP.String(), cfgHost.ListenPort, cfgHost.MTU, "-"
			if r := it.Registration; r != nil {
				if r.UnderlayIP.IsValid() {
					ip = r.UnderlayIP.String()
				}
				if r.ListenPort != 0 {
					port = r.ListenPort
				}
				if r.MTU != 0 {
					mtu = r.MTU
				}
				key = r.PublicKey
			}
			live := "no"
			if it.Live != nil && *it.Live {
				live = "yes"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", it.Name, live, ip, port, mtu, key)
		}
	} else {
		fmt.Fprintln(w, "NAME\tSPEC")
		for _, it := range res.Items {
			fmt.Fprintf(w, "%s\t%s\n", it.Name, it.Spec)
		}
	}
	return w.Flush()
}
