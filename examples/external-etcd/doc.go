// Package externaletcd holds the example systemd drop-in and environment
// file for a shoelace-server replica against an external etcd cluster, and
// a test that checks them against the server's flags. It has no Go code of
// its own.
package externaletcd
