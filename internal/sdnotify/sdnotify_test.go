package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket like systemd's and returns its
// NOTIFY_SOCKET name and a function that reads the next datagram.
func listen(t testing.TB, abstract bool) (string, func(testing.TB) string) {
	t.Helper()
	var name, bind string
	if abstract {
		name = fmt.Sprintf("@shoelace-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		bind = "\x00" + name[1:]
	} else {
		name = filepath.Join(t.TempDir(), "notify.sock")
		bind = name
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: bind, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return name, func(t testing.TB) string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read datagram: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotify_Messages(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			name, next := listen(t, abstract)
			t.Setenv(SocketEnv, name)
			tests := []struct {
				send func() error
				want string
			}{
				{Ready, "READY=1"},
				{Reloading, "RELOADING=1"},
				{Stopping, "STOPPING=1"},
				{func() error { return Status("rendered 3 files\nat revision 42") }, "STATUS=rendered 3 files at revision 42"},
			}
			for _, tt := range tests {
				if err := tt.send(); err != nil {
					t.Fatalf("send %q: %v", tt.want, err)
				}
				if got := next(t); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestNotify_UnsetIsNoop(t *testing.T) {
	t.Setenv(SocketEnv, "")
	for _, f := range []func() error{Ready, Reloading, Stopping, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("with %s unset: %v, want nil", SocketEnv, err)
		}
	}
}

func TestNotify_Errors(t *testing.T) {
	tests := []struct {
		name, socket, want string
	}{
		{"relative path", "notify.sock", "neither an absolute path nor an abstract socket"},
		{"nobody listening", filepath.Join(t.TempDir(), "absent.sock"), "dial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(SocketEnv, tt.socket)
			err := Ready()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ready() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzStatus checks that any status becomes exactly one STATUS= line.
func FuzzStatus(f *testing.F) {
	f.Add("rendered 3 files")
	f.Add("line one\nline two\r\nline three\r")
	f.Add("")
	f.Add("READY=1\nSTOPPING=1")
	name, next := listen(f, false)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 2048 {
			t.Skip("longer than a notify datagram needs to be")
		}
		t.Setenv(SocketEnv, name)
		if err := Status(s); err != nil {
			t.Fatal(err)
		}
		got := next(t)
		if !strings.HasPrefix(got, "STATUS=") || strings.ContainsAny(got, "\r\n") {
			t.Fatalf("Status(%q) sent %q: want one STATUS= line", s, got)
		}
	})
}
