// Package sdnotify reports service state to systemd through $NOTIFY_SOCKET
// (the sd_notify protocol), so units can use Type=notify. It uses only the
// standard library: the agent links it.
//
// Every function is a no-op returning nil when NOTIFY_SOCKET is unset, so
// callers report unconditionally.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// SocketEnv is the environment variable systemd sets for Type=notify services.
const SocketEnv = "NOTIFY_SOCKET"

// Ready tells systemd that start-up (or a reload) has finished.
func Ready() error { return Notify("READY=1") }

// Reloading tells systemd that the service is reloading its configuration;
// send Ready when done.
func Reloading() error { return Notify("RELOADING=1") }

// Stopping tells systemd that the service has begun shutting down.
func Stopping() error { return Notify("STOPPING=1") }

// Status sets the one-line status shown by `systemctl status`. Line breaks
// are replaced by spaces because the protocol is newline-separated.
func Status(s string) error {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	return Notify("STATUS=" + s)
}

// Notify sends state, newline-separated VAR=value assignments, to the socket
// named by $NOTIFY_SOCKET. A name starting with '@' is an abstract socket.
func Notify(state string) error {
	name := os.Getenv(SocketEnv)
	if name == "" {
		return nil
	}
	if state == "" {
		return errors.New("sdnotify: empty state")
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if strings.HasPrefix(name, "@") {
		addr.Name = "\x00" + name[1:]
	} else if !strings.HasPrefix(name, "/") {
		return fmt.Errorf("sdnotify: %s=%q is neither an absolute path nor an abstract socket", SocketEnv, name)
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sdnotify: dial %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", name, err)
	}
	return nil
}
