package systemd

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// directives parses a unit into section → key → values (in order).
func directives(t *testing.T, unit []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if out[section] == nil {
				out[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value inside a section", n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestUnits_Directives(t *testing.T) {
	tests := []struct {
		name string
		unit []byte
		want map[string]map[string][]string
	}{
		{AgentUnitName, AgentUnit, map[string]map[string][]string{
			"Unit": {
				"After":               {"network-online.target"},
				"Wants":               {"network-online.target"},
				"ConditionPathExists": {"/etc/shoelace/agent.yaml", "/etc/shoelace/token"},
			},
			"Service": {
				"Type":           {"notify"},
				"ExecStart":      {"/usr/bin/shoelace-agent run --config /etc/shoelace/agent.yaml"},
				"ExecReload":     {"/bin/kill -HUP $MAINPID"},
				"Restart":        {"on-failure"},
				"StateDirectory": {"shoelace"},
				// /etc must stay writable: the agent's job is to write there.
				"ProtectSystem": {"true"},
			},
			"Install": {"WantedBy": {"multi-user.target"}},
		}},
		{ServerUnitName, ServerUnit, map[string]map[string][]string{
			"Unit": {"After": {"network-online.target"}},
			"Service": {
				"Type":               {"notify"},
				"User":               {"shoelace"},
				"ExecStart":          {"/usr/bin/shoelace server"},
				"ExecReload":         {"/bin/kill -HUP $MAINPID"},
				"Restart":            {"on-failure"},
				"Environment":        {"SHOELACE_DATA_DIR=/var/lib/shoelace-server", "SHOELACE_ADMIN_TOKEN_FILE=/var/lib/shoelace-server/admin.token"},
				"StateDirectoryMode": {"0700"},
			},
			"Install": {"WantedBy": {"multi-user.target"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := directives(t, tt.unit)
			for section, keys := range tt.want {
				for k, want := range keys {
					if g := got[section][k]; strings.Join(g, "\n") != strings.Join(want, "\n") {
						t.Errorf("[%s] %s = %q, want %q", section, k, g, want)
					}
				}
			}
			if ws := got["Service"]["WorkingDirectory"]; len(ws) != 0 {
				t.Errorf("WorkingDirectory = %q: the units must not depend on a working directory", ws)
			}
			if bytes.Contains(tt.unit, []byte("{{")) {
				t.Errorf("unit contains {{: service managers would treat it as a template")
			}
		})
	}
}

// TestUnits_SystemdAnalyzeVerify runs `systemd-analyze verify` on copies of
// the units whose binaries point at an existing executable (verify refuses a
// missing ExecStart binary, and the real ones are installed by the packages).
func TestUnits_SystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	stand, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no `true` executable to stand in for the binaries")
	}
	dir := t.TempDir()
	for name, unit := range map[string][]byte{AgentUnitName: AgentUnit, ServerUnitName: ServerUnit} {
		s := strings.ReplaceAll(string(unit), "/usr/bin/shoelace-agent ", stand+" ")
		s = strings.ReplaceAll(s, "/usr/bin/shoelace ", stand+" ")
		if s == string(unit) {
			t.Fatalf("%s: ExecStart binary not found to substitute", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no", AgentUnitName, ServerUnitName)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestAgentUnit_NoDeviceAllowList: the agent's checks and commands run in its unit, and a reload
// may need a device (mount -a, swapon, losetup). ProtectClock=yes implies DeviceAllow=char-rtc r,
// which before systemd v253 (systemd/systemd#18142; Ubuntu 20.04's 245, 22.04's 249) allowed the
// unit no device but the pseudo devices; so do DeviceAllow= and DevicePolicy= themselves, and
// PrivateDevices=. The clock stays protected: the capabilities and the system calls that set it
// are taken away, as ProtectClock takes them (with EPERM, not a kill).
func TestAgentUnit_NoDeviceAllowList(t *testing.T) {
	svc := directives(t, AgentUnit)["Service"]
	for _, k := range []string{"ProtectClock", "DeviceAllow", "DevicePolicy", "PrivateDevices"} {
		if v, ok := svc[k]; ok {
			t.Errorf("%s=%s: limits the devices the agent's commands may open", k, strings.Join(v, " "))
		}
	}
	for k, want := range map[string]string{
		"CapabilityBoundingSet": "~CAP_SYS_TIME CAP_WAKE_ALARM",
		"SystemCallFilter":      "~@clock",
		"SystemCallErrorNumber": "EPERM",
	} {
		if got := strings.Join(svc[k], "\n"); got != want {
			t.Errorf("%s = %q, want %q (the clock protected without ProtectClock)", k, got, want)
		}
	}
}

// TestAgentUnit_CommandsLimitsDocumented: the agent's checks and commands run in its unit, so its
// ProtectSystem=true and ProtectKernelModules=yes hold for them too. The unit and the README said
// what a destination under /usr or /boot meets, not that a reload such as update-grub or modprobe
// fails the same way (and rolls its group back), nor how to run one.
func TestAgentUnit_CommandsLimitsDocumented(t *testing.T) {
	svc := directives(t, AgentUnit)["Service"]
	if strings.Join(svc["ProtectKernelModules"], "") != "yes" && strings.Join(svc["ProtectSystem"], "") == "" {
		t.Skip("the agent's unit no longer limits its commands")
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string][]byte{AgentUnitName: AgentUnit, "README.md": readme} {
		for _, want := range []string{"update-grub", "modprobe", "systemctl start"} {
			if !bytes.Contains(doc, []byte(want)) {
				t.Errorf("%s does not say that a command such as %s meets the unit's limits, or how to run one outside them", name, want)
			}
		}
	}
}

// TestAgentUnit_StopSignalsTheAgentAlone: the agent lets a reload command it started for a file
// already installed finish when it is told to stop. Under systemd's default KillMode
// (control-group) a stop, a restart or a package upgrade's try-restart sent SIGTERM to that
// command as well: "command failed … ended by signal: terminated", the new files rolled back and
// the failure reported to the server (where it may halt a staged rollout). KillMode=mixed sends
// SIGTERM to the agent only.
func TestAgentUnit_StopSignalsTheAgentAlone(t *testing.T) {
	if got := directives(t, AgentUnit)["Service"]["KillMode"]; strings.Join(got, "\n") != "mixed" {
		t.Errorf("KillMode = %q, want mixed: a stop must not signal the commands the agent waits for", got)
	}
}
