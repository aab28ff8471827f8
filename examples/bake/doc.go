// Package bake holds the VM-template bake example (bake.sh) and its
// end-to-end test, which runs the script against a real server into a
// temporary root. It has no Go code of its own.
package bake
