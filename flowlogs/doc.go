// Package flowlogs formats and exports AWS-style VPC flow-log records
// (SPEC §6, issue #4).
//
// It is the output half of flow logs: a [Record] is one flow at one ENI in one
// direction within one aggregation interval, a [Format] renders records as
// AWS text lines (the version 2 default or a custom ${field} string), and a
// [Sink] delivers one interval's records to a destination: a text file with
// a header line and size-based rotation, JSON lines, standard output, or
// IPFIX (RFC 7011) over UDP. Counting packets in the datapath and
// aggregating them into records happen elsewhere.
//
// Sinks never hide loss: records a sink could not deliver are counted by
// Lost and failed writes or sends by Errors, and no sink buffers more than
// one interval's records.
package flowlogs
