// Package systemd holds the systemd units that the packages ship and that
// `shoelace-agent install` and `shoelace install` write, so there is exactly
// one copy of each unit.
package systemd

import _ "embed"

// AgentUnit is the content of shoelace-agent.service.
//
//go:embed shoelace-agent.service
var AgentUnit []byte

// ServerUnit is the content of shoelace-server.service.
//
//go:embed shoelace-server.service
var ServerUnit []byte

// AgentUnitName is the file name of the agent's unit.
const AgentUnitName = "shoelace-agent.service"

// ServerUnitName is the file name of the server's unit.
const ServerUnitName = "shoelace-server.service"
