// Package packaging holds the nfpm configs, maintainer scripts and
// package.sh that build the shoelace-agent and shoelace-server .deb and .rpm
// packages (`make package`). It has no Go code: its tests build the packages
// and inspect them the way dpkg and rpm see them.
package packaging
