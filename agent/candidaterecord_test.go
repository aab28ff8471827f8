//go:build !windows

package agent

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The record of a candidate's files is read back only when it is the agent's, of its
// appliance, whole and within its bound; anything else is an error (which the start logs and
// ignores), never a record half taken.
func TestLoadCandidates_Refused(t *testing.T) {
	entry := candidateEntry{Destination: "/etc/app.conf", Rollout: "ro-1", Path: "/etc/app.conf", Existed: true, Data: []byte("old\n"), Mode: 0o640}
	record := func(app string, files ...candidateEntry) []byte {
		b, err := json.Marshal(candidateRecord{Appliance: app, Files: files})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := entry
	big.Data = bytes.Repeat([]byte("x"), maxCandidateBytes/2+1)
	for _, c := range []struct {
		name string
		data []byte
		mode os.FileMode
		want string // in the error; "" for none
	}{
		{"good", record("web", entry), 0o600, ""},
		{"corrupt", []byte(`{"appliance":"web","files":[{"destination":`), 0o600, "unexpected end of JSON input"},
		{"not JSON", []byte("\x00\x01garbage"), 0o600, "invalid character"},
		{"another appliance's", record("db", entry), 0o600, `appliance "db"'s, not "web"`},
		{"over 16 MiB of files", record("web", big, big), 0o600, "over 16 MiB of files"},
		{"over its size", bytes.Repeat([]byte(" "), 2*maxCandidateBytes+1), 0o600, "over 32 MiB: not a file the agent wrote"},
		{"writable by others", record("web", entry), 0o666, "group or others may write it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := CandidatePath(dir, "web")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			got, err := loadCandidates(dir, "web")
			if c.want == "" {
				if err != nil || len(got) != 1 || string(got[0].Data) != "old\n" || got[0].Mode != 0o640 || got[0].Rollout != "ro-1" {
					t.Fatalf("loadCandidates = %+v, %v; want the entry", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || got != nil {
				t.Fatalf("loadCandidates = %v, %v; want no entry and an error saying %q", got, err, c.want)
			}
			if strings.Contains(err.Error(), "old\n") {
				t.Fatalf("the error shows the previous bytes: %v", err)
			}
		})
	}
	if got, err := loadCandidates(t.TempDir(), "web"); got != nil || err != nil {
		t.Fatalf("loadCandidates of no record = %v, %v; want none", got, err)
	}
}
