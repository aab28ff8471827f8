package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func tokenCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "token",
		Usage:     "create, list and revoke API tokens (admin only)",
		UsageText: "shoelace token create|ls|revoke [arguments] [flags]",
		Description: `Tokens are what every /v1 request and the web console's sign-in present: an admin token, a
read or write token of key prefixes, or an appliance's agent token. Their secrets are shown
once, at creation, and stored only as hashes. Run "shoelace token COMMAND --help" for each
command's flags.

EXAMPLES:
   shoelace token create --name deploy --write appliances/web-frontend --read shared
   shoelace token ls
   shoelace token revoke deploy`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a token and print its secret once, as the last line",
				UsageText: "shoelace token create --name NAME (--appliance A | --read PREFIX… | --write PREFIX… | --admin)",
				Description: `--appliance A grants exactly what an agent of appliance A needs: read A's view and report
its status. --read and --write grant key prefixes, by whole segments, each one or more
(--read a b, --read a --read b or --read a,b); --write also allows reading; "/" is every key
(an empty prefix is refused).
--admin grants everything, tokens included.
Prints the revision of the write ("revision N"), then the secret once, as the last line of the
output; store it with mode 0600. With --output json, prints {"name",…,"token","revision"}.

EXAMPLES:
   shoelace token create --name web-agents --appliance web-frontend | tail -n1 > web.token
   shoelace token create --name deploy --write appliances/web-frontend --read shared`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "token `NAME`"},
					&cli.StringFlag{Name: "appliance", Usage: "agent token for appliance `A`"},
					&cli.StringSliceFlag{Name: "read", Usage: "key `PREFIX`es the token may read (--read a b, --read a --read b or --read a,b)"},
					&cli.StringSliceFlag{Name: "write", Usage: "key `PREFIX`es the token may read and write (--write a b, --write a --write b or --write a,b)"},
					&cli.BoolFlag{Name: "admin", Usage: "grant everything"},
				},
				Action: e.tokenCreate,
			},
			{
				Name:      "ls",
				Usage:     "list every token by name (never their secrets); --all: instance tokens too",
				UsageText: "shoelace token ls [--all] [--output json]",
				Description: `Lists every token the server holds, by name: the admin, read, write and agent tokens
users created. Prints one token per line: name, grants and creation time, tab-separated. With
--output json, prints {"tokens":[{"name","appliance","read","write","admin","created",…}]}.
The instance tokens of enrolled agents (one per VM, named instance:APPLIANCE:INSTANCE) are
left out unless --all; free one with "shoelace appliance forget APPLIANCE INSTANCE".
token ls reads every page of them from the server (at a fleet's
scale, --all reads 1000 tokens a request) and prints them all.

EXAMPLES:
   shoelace token ls | cut -f1`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "all", Usage: "list the instance tokens of enrolled agents too"},
				},
				Action: e.tokenList,
			},
			{
				Name:      "revoke",
				Usage:     "revoke a token; its open long-polls end",
				ArgsUsage: "NAME",
				UsageText: "shoelace token revoke NAME",
				Description: `Deletes the token NAME at once on every replica: its requests get 401 and its open
long-polls end. Prints the revision. Exit code 3 when there is no such token.

EXAMPLES:
   shoelace token revoke web-agents`,
				Action: e.tokenRevoke,
			},
		},
	}
}

// tokenSpec builds and checks the grant of token create.
func tokenSpec(c *cli.Context) (api.TokenRequest, error) {
	spec := api.TokenRequest{
		Name:      c.String("name"),
		Appliance: c.String("appliance"),
		Read:      c.StringSlice("read"),
		Write:     c.StringSlice("write"),
		Admin:     c.Bool("admin"),
	}
	if spec.Name == "" {
		return spec, usagef("token create: missing --name NAME")
	}
	if err := api.ValidateSegment("token name", spec.Name); err != nil {
		return spec, err
	}
	kinds := 0
	if spec.Appliance != "" {
		kinds++
		if err := api.ValidateSegment("appliance name", spec.Appliance); err != nil {
			return spec, err
		}
	}
	if len(spec.Read) > 0 || len(spec.Write) > 0 {
		kinds++
	}
	if spec.Admin {
		kinds++
	}
	if kinds != 1 {
		return spec, usagef("token create: give exactly one of --appliance, --read/--write or --admin")
	}
	for _, g := range []struct {
		flag     string
		prefixes []string
	}{{"read", spec.Read}, {"write", spec.Write}} {
		for i, p := range g.prefixes {
			if strings.TrimSpace(p) == "" {
				// The root prefix: every key. An unset variable (--write "$PREFIX") or a stray
				// comma (--read shared,) must not grant it by accident.
				return spec, usagef("token create: --%s %q: an empty prefix would grant every key; give --%s / to mean every key", g.flag, p, g.flag)
			}
			v, err := api.ValidatePrefix(p)
			if err != nil {
				if rest, ok := strings.CutPrefix(p, "/"); ok && rest != "" {
					if r, err2 := api.ValidatePrefix(rest); err2 == nil {
						// confd's way of writing keys: what was meant is plain.
						return spec, fmt.Errorf("--%s: invalid prefix %q: prefixes, like keys, have no leading '/': did you mean --%s %s?", g.flag, p, g.flag, r)
					}
				}
				return spec, fmt.Errorf("--%s: %w", g.flag, err)
			}
			if v == "" {
				v = "/" // the root, as the API takes it on purpose: an empty prefix it refuses
			}
			g.prefixes[i] = v
		}
	}
	return spec, nil
}

// grants describes what a token may do, in one line.
func grants(t api.TokenRequest) string {
	var parts []string
	if t.Admin {
		parts = append(parts, "admin")
	}
	if t.Appliance != "" {
		parts = append(parts, "appliance="+t.Appliance)
	}
	if len(t.Read) > 0 {
		parts = append(parts, "read="+strings.Join(orRoot(t.Read), ","))
	}
	if len(t.Write) > 0 {
		parts = append(parts, "write="+strings.Join(orRoot(t.Write), ","))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func orRoot(prefixes []string) []string {
	out := make([]string, len(prefixes))
	for i, p := range prefixes {
		if p == "" {
			p = "/"
		}
		out[i] = p
	}
	return out
}

func (e *cliEnv) tokenCreate(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, "--name NAME (--appliance A | --read PREFIX… | --write PREFIX… | --admin)"); err != nil {
		return err
	}
	spec, err := tokenSpec(c)
	if err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	t, err := s.client.CreateToken(s.ctx, spec)
	if err != nil {
		return err
	}
	if t.Token == "" {
		return fmt.Errorf("token create %s: the server answered without a secret", spec.Name)
	}
	if s.json {
		return printJSON(e.stdout, t)
	}
	if t.Name == "" {
		t.TokenRequest = spec
	}
	if t.Revision > 0 {
		if err := printRevision(e.stdout, false, t.Revision); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(e.stdout, "created token %s (%s); its secret, shown only once:\n%s\n", t.Name, grants(t.TokenRequest), t.Token)
	return err
}

func (e *cliEnv) tokenList(c *cli.Context) error {
	if _, err := wantArgs(c, 0, 0, ""); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	list := s.client.Tokens
	if c.Bool("all") {
		list = s.client.AllTokens
	}
	ts, err := list(s.ctx)
	if err != nil {
		return err
	}
	if s.json {
		if ts == nil {
			ts = []api.TokenInfo{}
		}
		return printJSON(e.stdout, api.TokenList{Tokens: ts})
	}
	for _, t := range ts {
		g := grants(t.TokenRequest)
		if t.Instance != "" {
			g += " instance=" + t.Instance
		}
		line := t.Name + "\t" + g
		if !t.Created.IsZero() {
			// To the second, as the server keeps the others: an instance token's is its
			// enrollment's time, with nanoseconds.
			line += "\t" + t.Created.UTC().Format(time.RFC3339)
		}
		if _, err := fmt.Fprintln(e.stdout, line); err != nil {
			return err
		}
	}
	return nil
}

func (e *cliEnv) tokenRevoke(c *cli.Context) error {
	a, err := wantArgs(c, 1, 1, "NAME")
	if err != nil {
		return err
	}
	if parts := strings.Split(a[0], ":"); len(parts) == 3 && parts[0] == "instance" {
		// A name token ls --all prints: not an invalid name, a token revoke does not take.
		return &api.Error{Code: api.CodeInvalidName, Message: fmt.Sprintf(
			"token %q is an instance token: free its instance with: shoelace appliance forget %s %s (which revokes the token too)", a[0], parts[1], parts[2])}
	}
	if api.RedactSecrets(a[0]) != a[0] {
		// Not sent, and not printed: a secret pasted here would go into the server's
		// request path and the CI log.
		return usagef("token revoke: the argument is a token's secret (sl_…), not its name: give the token's name (shoelace token ls lists them)")
	}
	if err := api.ValidateSegment("token name", a[0]); err != nil {
		return err
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	rev, err := s.client.RevokeToken(s.ctx, a[0])
	if err != nil {
		return err
	}
	return printRevision(e.stdout, s.json, rev)
}
