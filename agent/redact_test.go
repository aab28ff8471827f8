//go:build !windows

package agent_test

import (
	"context"
	"strings"
	"testing"
)

// What a check or a reload command prints goes to the log; a secret it echoes does not: the
// whole value, a value another one holds, a key file whose output lost its last newline, one
// line of a key file, and the start of a secret where a long output was cut.
func TestAgent_CommandAndCheckOutputRedacted(t *testing.T) {
	const (
		password = "hunter2-very-secret"
		short    = "hunter2" // held by password: masking it first would leave "-very-secret"
		keyLine  = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
		pem      = "-----BEGIN PRIVATE KEY-----\n" + keyLine + "\n-----END PRIVATE KEY-----\n"
	)
	srv := newViewServer(t, map[string]string{
		"db/secrets/password": password,
		"db/secrets/short":    short,
		"tls/secrets/key":     pem,
		"port":                "80",
	})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "pw={{ key \"db/secrets/password\" }} short={{ key \"db/secrets/short\" }}\n"
    destination: $DIR/db.conf
    command: cat $DIR/db.conf
  - contents: "{{ key \"tls/secrets/key\" }}"
    destination: $DIR/tls.key
    command: 'cat $DIR/tls.key; echo "bad line: $(sed -n 2p $DIR/tls.key)"'
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/long.conf
    command: "head -c 16374 /dev/zero | tr '\\0' x; sed 's/^pw=//' $DIR/db.conf"
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/plain.conf
    check: 'echo "checking with $(cat $DIR/db.conf)"; cat $DIR/tls.key; exit 1'
`)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "check of "+dir+"/plain.conf failed") {
		t.Fatalf("Once = %v, want the check of plain.conf failed", err)
	}
	got := logs.String() + "\n" + err.Error()
	for _, leak := range []string{short, "-ve", keyLine, "PRIVATE KEY"} {
		if i := strings.Index(got, leak); i >= 0 {
			t.Errorf("%q reached the logs or the error: …%s…", leak, got[max(i-200, 0):min(i+200, len(got))])
		}
	}
	for _, want := range []string{
		`"output":"pw=[redacted] short=[redacted]"`,    // db.conf's command
		`"output":"[redacted]bad line: [redacted]"`,    // tls.key's: the whole file, then one line
		`x[redacted]\n[… 24 more bytes not kept]`,      // long.conf's: cut in the middle of the password
		"checking with pw=[redacted] short=[redacted]", // plain.conf's check
	} {
		if !strings.Contains(got, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

// A command that shows what changed (a diff against the .bak) prints the secret the file held
// before a rotation too: that value is masked as well, though the view no longer has it.
func TestAgent_CommandOutputMasksRotatedSecret(t *testing.T) {
	const old, rotated = "old-secret-value-1", "new-secret-value-2"
	srv := newViewServer(t, map[string]string{"db/secrets/password": old})
	a, _, logs := testAgent(t, srv, header+`templates:
  - contents: "password={{ key \"db/secrets/password\" }}\n"
    destination: $DIR/db.conf
    backup: true
    command: "diff $DIR/db.conf.bak $DIR/db.conf; true"
`)
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	v := rotated
	srv.set(map[string]*string{"db/secrets/password": &v})
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	got := logs.String()
	if !strings.Contains(got, `> password=[redacted]`) {
		t.Fatalf("the command's diff is not in the logs: %s", got)
	}
	for _, leak := range []string{old, rotated} {
		if i := strings.Index(got, leak); i >= 0 {
			t.Errorf("%q reached the logs: …%s…", leak, got[max(i-200, 0):min(i+200, len(got))])
		}
	}
}

// In an appliance named "secrets" every key is a secret (its whole path has a secrets segment),
// so a reload command echoing any value of the view logs it masked.
func TestAgent_ApplianceNamedSecretsRedacted(t *testing.T) {
	const password = "hunter2-very-secret"
	srv := newViewServer(t, map[string]string{"db/password": password})
	a, _, logs := testAgent(t, srv, strings.Replace(header, "appliance: web", "appliance: secrets", 1)+`templates:
  - contents: "pw={{ key \"db/password\" }}\n"
    destination: $DIR/db.conf
    perms: "0600"
    command: cat $DIR/db.conf
`)
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	if got := logs.String(); strings.Contains(got, password) || !strings.Contains(got, "[redacted]") {
		t.Fatalf("the value of appliances/secrets/db/password reached the log unmasked:\n%s", got)
	}
}

// A render error that quotes a part of a secret (a field split out of it, its start) as the
// input it refused carried that part to the log, the status file, the report and once's error:
// only whole values were masked. A quoted part of a secret is masked too.
func TestAgent_RenderErrorQuotingPartOfASecretRedacted(t *testing.T) {
	const dsn = "admin:Hunter2Pass@db.internal:5432"
	srv := newViewServer(t, map[string]string{"db/secrets/dsn": dsn, "port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "user={{ key (printf \"%.15s\" (key \"db/secrets/dsn\")) }}\n"
    destination: $DIR/db.conf
`)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "render "+dir+"/db.conf") {
		t.Fatalf("Once = %v, want the render of db.conf failed", err)
	}
	got := logs.String() + "\n" + err.Error() + "\n" + read(t, dir+"/cache/web.status.json")
	if i := strings.Index(got, "Hunter2"); i >= 0 {
		t.Errorf("a part of the secret reached the logs, the status or the error: …%s…", got[max(i-200, 0):min(i+200, len(got))])
	}
	if !strings.Contains(err.Error(), `"[redacted]"`) {
		t.Errorf("Once = %v, want the quoted part masked", err)
	}
}

// A render error that quotes a secret as a template function changed it — upper- or lower-cased,
// base64- or hex-encoded — carried it to the log, the status file and the error: only the value
// as stored (and parts of it) were masked.
func TestAgent_RenderErrorQuotingAnEncodedSecretRedacted(t *testing.T) {
	const creds = "dbuser:Sup3rS3cretPw"
	for _, fn := range []string{"upper", "lower", "b64enc", "base64Encode", "base64URLEncode"} {
		t.Run(fn, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"secrets/creds": creds, "port": "80"})
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "n={{ key \"secrets/creds\" | `+fn+` | parseInt }}\n"
    destination: $DIR/n.conf
`)
			err := a.Once(context.Background(), "", false)
			if err == nil || !strings.Contains(err.Error(), "render "+dir+"/n.conf") {
				t.Fatalf("Once = %v, want the render of n.conf failed", err)
			}
			got := logs.String() + "\n" + err.Error() + "\n" + read(t, dir+"/cache/web.status.json")
			for _, form := range []string{"S3cret", "S3CRET", "s3cret", "ZGJ1c2Vy", "64627573"} {
				if i := strings.Index(got, form); i >= 0 {
					t.Errorf("the secret as %s made it (%s) reached the logs, the status or the error: …%s…", fn, form, got[max(i-200, 0):min(i+200, len(got))])
				}
			}
			if !strings.Contains(err.Error(), `parsing "[redacted]"`) {
				t.Errorf("Once = %v, want the secret masked where parseInt quotes it", err)
			}
		})
	}
}

// A render error that quotes a key's value (fail, required) is one line with its control
// characters escaped, in once's error, the log and the status: a value holding a newline and
// a terminal's escapes forged a second line ("…: all templates in place") and set the colours
// and title of the terminal that showed once's error.
func TestAgent_RenderErrorOfAValueOnOneLine(t *testing.T) {
	msg := "x\n/etc/agent.yaml: all templates in place\x1b[31mRED\x1b[0m\x1b]0;TITLE\a"
	srv := newViewServer(t, map[string]string{"msg": msg})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: '{{ fail (key "msg") }}'
    destination: $DIR/i.conf
`)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "render "+dir+"/i.conf") {
		t.Fatalf("Once = %v, want the render failed", err)
	}
	line := err.Error()[strings.Index(err.Error(), "render "+dir+"/i.conf"):]
	line = line[:strings.IndexByte(line+"\n", '\n')]
	if !strings.Contains(line, `x\n/etc/agent.yaml: all templates in place\x1b[31mRED`) || strings.ContainsAny(err.Error(), "\x1b\a") {
		t.Fatalf("Once = %q, want the value on the render's line, escaped", err)
	}
	if status := read(t, dir+"/cache/web.status.json"); strings.Contains(status, `\u001b`) || !strings.Contains(status, `x\\n/etc`) {
		t.Fatalf("status: %s", status)
	}
}
