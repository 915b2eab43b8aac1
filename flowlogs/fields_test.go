package flowlogs

import (
	"testing"

	"github.com/vpcd/vpcd/topology"
)

// TestEveryFieldPrints: every field the validator lets a format name (the
// list topology owns) has a printer here, under its own name.
func TestEveryFieldPrints(t *testing.T) {
	for _, name := range topology.FlowLogFields() {
		f, ok := lookupField(name)
		if !ok {
			t.Errorf("flow-log field %q passes validation but has no printer", name)
			continue
		}
		if f.name != name {
			t.Errorf("flow-log field %q prints as %q", name, f.name)
		}
	}
}
