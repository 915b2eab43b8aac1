// Command flowgen opens many flows from inside a workload, for `make bench`'s
// memory measurement: one UDP datagram to each port of a range on each
// target address, every one a new connection the datapath tracks.
//
//	flowgen -ports 10000-59999 10.50.0.11 10.50.0.12
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	ports := flag.String("ports", "10000-59999", "destination port range, inclusive")
	pace := flag.Duration("pace", 20*time.Microsecond, "pause between datagrams")
	flag.Parse()
	lo, hi, err := portRange(*ports)
	if err != nil || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: flowgen [-ports LO-HI] ADDR...")
		os.Exit(2)
	}
	c, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "flowgen:", err)
		os.Exit(1)
	}
	defer c.Close()
	sent := 0
	for _, a := range flag.Args() {
		ip := net.ParseIP(a)
		if ip == nil {
			fmt.Fprintf(os.Stderr, "flowgen: bad address %q\n", a)
			os.Exit(2)
		}
		for p := lo; p <= hi; p++ {
			if _, err := c.WriteTo([]byte("flow"), &net.UDPAddr{IP: ip, Port: p}); err == nil {
				sent++
			}
			if *pace > 0 {
				time.Sleep(*pace)
			}
		}
	}
	fmt.Println(sent)
}

func portRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("bad range %q", s)
	}
	return lo, hi, nil
}
