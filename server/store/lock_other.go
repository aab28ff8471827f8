//go:build !unix

package store

// lockDir is a no-op where flock is missing; etcd's own file locks remain.
func lockDir(path string) (func(), error) { return func() {}, nil }
