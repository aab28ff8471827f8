package cloudinit

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/agent"
)

type userData struct {
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Owner       string `yaml:"owner"`
		Permissions string `yaml:"permissions"`
		Content     string `yaml:"content"`
	} `yaml:"write_files"`
	RunCmd [][]string `yaml:"runcmd"`
}

func TestUserData(t *testing.T) {
	raw, err := os.ReadFile("user-data.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("#cloud-config\n")) {
		t.Fatalf("user-data must start with the line #cloud-config")
	}
	var ud userData
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&ud); err != nil {
		t.Fatalf("user-data.yaml: %v", err)
	}

	files := map[string]int{}
	for i, f := range ud.WriteFiles {
		files[f.Path] = i
		if f.Owner != "root:root" {
			t.Errorf("%s: owner %q, want root:root", f.Path, f.Owner)
		}
	}
	tokenAt, ok := files["/etc/shoelace/token"]
	if !ok {
		t.Fatal("no write_files entry for /etc/shoelace/token")
	}
	if p := ud.WriteFiles[tokenAt].Permissions; p != "0600" {
		t.Errorf("token permissions %q, want 0600 (the agent refuses a looser token file)", p)
	}
	cfgAt, ok := files["/etc/shoelace/agent.yaml"]
	if !ok {
		t.Fatal("no write_files entry for /etc/shoelace/agent.yaml")
	}

	// The config must pass the agent's own parser and validation, with the
	// token file it names in place.
	cfg, err := agent.ParseConfig("user-data.yaml:/etc/shoelace/agent.yaml", []byte(ud.WriteFiles[cfgAt].Content))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenFile != "/etc/shoelace/token" {
		t.Errorf("token_file = %q: the unit's ConditionPathExists waits for /etc/shoelace/token", cfg.TokenFile)
	}
	if cfg.CAFile != "" {
		if _, ok := files[cfg.CAFile]; !ok {
			t.Errorf("ca_file %s is not written by write_files", cfg.CAFile)
		}
	}
	dir := t.TempDir()
	cfg.TokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(cfg.TokenFile, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg.CAFile != "" {
		cfg.CAFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(cfg.CAFile, []byte(ud.WriteFiles[files["/etc/shoelace/ca.pem"]].Content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg.TemplatesDir = ""
	if err := cfg.Validate(); err != nil {
		t.Errorf("agent config in user-data: %v", err)
	}

	want := []string{"systemctl", "enable", "--now", "shoelace-agent.service"}
	if !slices.ContainsFunc(ud.RunCmd, func(c []string) bool { return slices.Equal(c, want) }) {
		t.Errorf("runcmd lacks %q: %q", strings.Join(want, " "), ud.RunCmd)
	}
}
