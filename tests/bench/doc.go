// Package bench measures Shoelace end to end against its peers on the same etcd: how long a write
// takes to reach a rendered file through shoelace server + shoelace-agent, through confd -watch, and
// the floor (a raw etcd watch). Run it with `make bench`; figures go into BENCHMARKS.md.
package bench
