// Package mirror will copy chosen traffic of an ENI to an appliance with AWS
// Traffic Mirroring semantics (issue #5). Nothing is implemented yet:
// topologies may name mirror sessions, and vpcd validates them, but nothing
// is mirrored.
package mirror
