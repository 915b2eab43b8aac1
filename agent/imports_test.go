package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the daemon's shape: only cmd/vpcd imports the daemon
// (the lab and tests talk to it through package control), and the planner,
// the sources and the control API never import it.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f",
		`{{.ImportPath}}: {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`,
		"github.com/vpcd/vpcd/...").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v: %s", err, out)
	}
	const self = "github.com/vpcd/vpcd/agent"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		if pkg == self || pkg == "github.com/vpcd/vpcd/cmd/vpcd" {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if imp == self {
				t.Errorf("%s imports the daemon; talk to it through package control", pkg)
			}
		}
	}
}
