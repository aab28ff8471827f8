// Package ha holds Shoelace's high-availability, topology and runbook tests. It has no code of
// its own. TestMain builds bin/shoelace, bin/shoelace-agent, etcdutl and etcdctl (from go.mod) into a
// temporary directory; the tests run them as child processes against etcd members embedded in
// the test process on loopback.
//
//   - TestHA_LeaderKillThenReplicaKill: a 3-member etcd cluster, two replicas started together
//     (exactly one writes the admin token), writes, reads and long-polls through both and an
//     agent behind a health-checking proxy; the etcd leader is killed mid-stream (no
//     acknowledged write lost, only 5xx refusals, every long-poll view exact), then replica A is
//     killed with SIGKILL (the agent moves to B and converges), the runbook's failover-find and
//     sanity procedures run, and A comes back.
//   - TestHA_TLSEverywhere: the same with TLS on every hop and a TLS-passthrough proxy, plus the
//     refusals (no etcd client certificate, a CLI without the CA).
//   - TestRunbook_Procedures and TestRunbook_EtcdProcedures: every block of docs/RUNBOOK.md
//     marked <!-- runbook-test: NAME --> runs as written (bash -euo pipefail), and the test checks
//     what it did; $SHOELACE_ETCDCTL runs the etcdctl procedures with another etcdctl build.
//   - TestTopology_*: docs/production's etcd configs load in etcd and fit the API's limits; the
//     HAProxy timeouts exceed the agents' long-poll wait.
//   - TestMeasure_Resources (SHOELACE_MEASURE=1): the runbook's measured figures.
//
// All of it runs in `make test` (skipped only with -short): go test -count=1 ./tests/ha/
package ha
