//go:build race

package server

// raceOn says the tests run under the race detector, whose shadow memory and slower code make
// heap figures and timings of a few tests meaningless as bounds.
const raceOn = true
