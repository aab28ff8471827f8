// Package cloudinit holds the first-boot cloud-init example (user-data.yaml)
// and a test that checks it against the agent's own config rules. It has no
// Go code of its own.
package cloudinit
