// Package ha holds Shoelace's high-availability and runbook tests. It has no code of its own:
// the tests start a 3-member etcd cluster (embedded members on loopback), run built shoelace
// and shoelace-agent binaries against it as child processes, kill the etcd leader and a
// replica, and check that no acknowledged write is lost and that agents converge. The runbook
// test runs the procedures of docs/RUNBOOK.md as they are written there.
package ha
