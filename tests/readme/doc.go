// Package readme runs the README's command blocks as written, so that the guide and the product
// cannot drift apart. It has no code of its own.
//
// TestReadme_Blocks builds bin/shoelace and bin/shoelace-agent, starts a server on an embedded
// etcd on loopback, and runs every ```sh block of README.md in order (bash -euo pipefail, one
// working directory, SHOELACE_ADDR and SHOELACE_TOKEN_FILE set as `make run` prints them), except
// the blocks marked
//
//	<!-- readme-test: skip REASON -->
//
// (production addresses, systemd, Docker, and `make run` / `make test`, which have tests of
// their own). A block marked
//
//	<!-- readme-test: file PATH -->
//
// is written to PATH before any block runs. The VM the README's agent section describes is a
// directory: the paths /etc/ (and [/etc]) and /var/lib/shoelace in blocks and files are rewritten under it,
// and https://shoelace.internal:7400 is the test's server.
package readme
