// Package scripts holds run.sh, the script behind `make run`. It has no Go code: its test runs
// the script as `make run` does and checks what the README promises of it.
package scripts
