// Command benchchart draws the throughput table of BENCHMARKS.json (written
// by `make bench`) as a bar chart PNG.
//
//	benchchart -in BENCHMARKS.json -out BENCHMARKS.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// labels names the cases of scripts/bench.sh, in the order drawn.
var labels = []struct{ key, label string }{
	{"veth", "bare veth pair"},
	{"vxlan", "kernel VXLAN (clear)"},
	{"wggo", "stock wireguard-go"},
	{"wggo1", "stock wireguard-go, 1 CPU"},
	{"vxlanwg", "kernel VXLAN over wireguard-go"},
	{"vpcd_cross", "vpcd across hosts"},
	{"vpcd_cross_fl", "vpcd across hosts + flow log"},
	{"vpcd_cross_mirror", "vpcd across hosts + mirror"},
	{"vpcd_cross_mirror_none", "vpcd + mirror, filter matches none"},
	{"vpcd_cross_e3", "vpcd across hosts from e3"},
	{"vpcd_cross_nosession", "vpcd from e3, host with a session"},
	{"vpcd_cross_xdp", "vpcd across hosts, underlay XDP"},
	{"vpcd_same", "vpcd on one host"},
	{"veth4", "bare veth pair, 4 streams"},
	{"wggo4", "stock wireguard-go, 4 streams"},
	{"wggo14", "stock wireguard-go, 1 CPU, 4 streams"},
	{"vpcd_cross4", "vpcd across hosts, 4 streams"},
	{"vpcd_same4", "vpcd on one host, 4 streams"},
}

type result struct {
	Date  string `json:"date"`
	Cores int    `json:"cores"`
	Gbit  map[string]struct {
		Median *float64 `json:"median"`
	} `json:"gbit_per_s"`
}

func main() {
	in := flag.String("in", "BENCHMARKS.json", "make bench's JSON")
	out := flag.String("out", "BENCHMARKS.png", "PNG to write")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		fail(err)
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		fail(fmt.Errorf("%s: %w", *in, err))
	}
	type bar struct {
		label string
		v     float64
		ours  bool
	}
	var bars []bar
	max := 0.0
	for _, l := range labels {
		g, ok := r.Gbit[l.key]
		if !ok || g.Median == nil {
			continue
		}
		bars = append(bars, bar{l.label, *g.Median, len(l.key) > 4 && l.key[:4] == "vpcd"})
		if *g.Median > max {
			max = *g.Median
		}
	}
	if len(bars) == 0 || max <= 0 {
		fail(fmt.Errorf("%s: no throughput to draw", *in))
	}

	const (
		labelW = 260
		barW   = 420
		rowH   = 24
		top    = 40
		left   = 10
	)
	w, h := left+labelW+barW+80, top+rowH*len(bars)+30
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	text(img, left, 20, fmt.Sprintf("make bench, %s, %d cores: iperf3 Gbit/s (median)", r.Date, r.Cores), color.Black)
	for i, br := range bars {
		y := top + i*rowH
		text(img, left, y+15, br.label, color.Black)
		n := int(br.v / max * barW)
		c := color.RGBA{0x9e, 0x9e, 0x9e, 0xff}
		if br.ours {
			c = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
		}
		draw.Draw(img, image.Rect(left+labelW, y+4, left+labelW+n, y+rowH-4), &image.Uniform{c}, image.Point{}, draw.Src)
		text(img, left+labelW+n+6, y+15, fmt.Sprintf("%.2f", br.v), color.Black)
	}
	text(img, left, h-8, "blue: vpcd; grey: baselines. Both ends of every path share the same cores.", color.Gray{0x55})
	f, err := os.Create(*out)
	if err != nil {
		fail(err)
	}
	if err := png.Encode(f, img); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchchart:", err)
	os.Exit(1)
}
