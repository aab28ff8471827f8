package main

import "testing"

// A --max-value-bytes past what etcd can store is a usage error naming the most. Before,
// 9223372036854775807 made the server panic at start (semaphore: size < 0): the body limit
// derived from it (+ 4 MiB) wrapped around; 4611686018427387903 started a server whose
// embedded etcd took requests of 10 MiB only, and whose console refused every form.
func TestE2E_ServerMaxValueBytesBounded(t *testing.T) {
	c := &runner{t: t}
	c.fails(exitUsage, "--max-value-bytes 9223372036854775807 must be > 0 and at most 1073741824 (1 GiB)",
		"server", "--data-dir", t.TempDir(), "--max-value-bytes", "9223372036854775807")
}
