package dataplane

import (
	"reflect"
	"sort"

	"github.com/cilium/ebpf"
)

// MapMemory is what one pinned map costs the kernel.
type MapMemory struct {
	Name  string `json:"name"`
	Bytes uint64 `json:"bytes"` // memlock the kernel charges for it
}

// MapMemory reports the kernel memory of every map of the datapath (all
// programs share them), largest first, and the total.
func (d *Datapath) MapMemory() ([]MapMemory, uint64) {
	var out []MapMemory
	var total uint64
	v := reflect.ValueOf(&d.eni.EniMaps).Elem()
	for i := 0; i < v.NumField(); i++ {
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || m == nil {
			continue
		}
		info, err := m.Info()
		if err != nil {
			continue
		}
		b, ok := info.Memlock()
		if !ok {
			continue
		}
		out = append(out, MapMemory{Name: v.Type().Field(i).Tag.Get("ebpf"), Bytes: b})
		total += b
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out, total
}
