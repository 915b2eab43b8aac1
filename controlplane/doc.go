// Package controlplane keeps vpcd's desired state in etcd v3 (SPEC §11):
// the objects of applied topology files, one key each, and the live
// registration of every host, one lease-bound key each.
//
// Key layout under a prefix (DefaultPrefix, "/vpcd"):
//
//	<prefix>/commit                     the last committed apply (commitRecord)
//	<prefix>/pending                    an apply that needs more than one transaction is writing
//	<prefix>/lock                       held (under the apply's lease) while an apply runs
//	<prefix>/objects/<kind>/<name>      one applied object (kinds: see Kinds)
//	<prefix>/hosts/<name>               a daemon's registration (HostRecord), under its lease
//
// Every value is JSON with a "schema" field (SchemaVersion) so a later
// vpcd can read what an older one wrote.
//
// Consistency: a reader only ever assembles the objects as they were at
// the revision of a commit record. Small applies write their objects and
// the commit record in one transaction; larger ones write a pending record
// first, their objects in several transactions, then the commit record;
// readers hold back object changes they watch until the commit record that
// covers them arrives, and a reader that starts while a pending record
// exists reads the objects at the last commit's revision (etcd keeps every
// revision until compaction). docs/controlplane.md has the argument and
// the failure modes.
//
// The pieces:
//   - Apply and Get write and read objects (the vpcd apply and get commands);
//   - Source is a source.Source: a whole, validated topology per committed
//     state or host change, watched from the revision it read;
//   - Register keeps a host's registration alive under a lease;
//   - Config.Client opens a client, with TLS client certificates;
//   - Metrics holds the vpcd_controlplane_* series a daemon registers.
package controlplane
