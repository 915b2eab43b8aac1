package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vpcd/vpcd/control"
)

func cmdMonitor(args []string) error {
	fs := newFlags("monitor", "monitor [--socket PATH] [--eni NAME] [--addr IP] [--verdict drop|accept|reject] [--json]")
	socket := fs.String("socket", control.DefaultSocket, "control socket of the daemon")
	eni := fs.String("eni", "", "only events of this ENI")
	addr := fs.String("addr", "", "only events with this source or destination address")
	verdict := fs.String("verdict", "", "only drop, accept or reject events")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *addr != "" {
		if _, err := netip.ParseAddr(*addr); err != nil {
			return fmt.Errorf("monitor: --addr %q is not an IP address", *addr)
		}
	}
	switch strings.ToUpper(*verdict) {
	case "", "DROP", "ACCEPT", "REJECT":
	default:
		return fmt.Errorf("monitor: --verdict %q: want drop, accept or reject", *verdict)
	}
	enc := json.NewEncoder(os.Stdout)
	return control.Monitor(*socket, func(ev control.Event) bool {
		if *eni != "" && ev.ENI != *eni {
			return true
		}
		if *addr != "" && ev.Src != *addr && ev.Dst != *addr {
			return true
		}
		if *verdict != "" && !strings.EqualFold(ev.Verdict, *verdict) {
			return true
		}
		if *asJSON {
			return enc.Encode(ev) == nil
		}
		_, err := fmt.Println(formatEvent(ev))
		return err == nil
	})
}

// formatEvent renders an event as one line, like cilium monitor.
func formatEvent(ev control.Event) string {
	ports := func(a string, p uint16) string {
		if p == 0 {
			return a
		}
		return fmt.Sprintf("%s:%d", a, p)
	}
	line := fmt.Sprintf("%s %-6s", ev.Time.Format("15:04:05.000"), ev.Verdict)
	if ev.Reason != "" {
		line += " " + ev.Reason
	}
	eni := ev.ENI
	if eni == "" {
		eni = "-"
	}
	line += fmt.Sprintf(" eni=%s %s %s %s -> %s", eni, ev.Direction, protoName(ev.Protocol), ports(ev.Src, ev.SrcPort), ports(ev.Dst, ev.DstPort))
	if ev.Kind == "flow" {
		line += fmt.Sprintf(" packets=%d bytes=%d", ev.Packets, ev.Bytes)
	}
	return line
}
