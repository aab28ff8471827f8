package main

import (
	"bytes"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func applianceSchemaCommand(e *cliEnv) *cli.Command {
	return &cli.Command{
		Name:      "schema",
		Usage:     "set, print or remove the JSON Schema that writes to an appliance must pass",
		UsageText: "shoelace appliance schema set|get|rm NAME [-f FILE|-]",
		Description: `An appliance may have a JSON Schema (draft 2020-12 unless the schema names its draft in
$schema). Every write that touches the appliance's own keys (appliance apply and rollback,
kv put, kv rm, txn, import) is then checked against the appliance's tree as the write would
leave it, as nested JSON: key nginx/port with value 8080 is {"nginx":{"port":"8080"}}. Values
are strings: use "pattern", "enum", "required", "format" rather than "type": "integer".
Formats are asserted: "port" (1-65535, digits), "hostname", "duration" (Go: 30s, 1h30m) and the
standard ones. A write that breaks the schema is refused with 422 schema_violation, naming the
key and the rule, and changes nothing (exit code 1); "appliance apply --dry-run" checks it too.
Keys under shared/ are not checked.

EXAMPLES:
   shoelace appliance schema set web-frontend -f web-frontend.schema.yaml
   shoelace appliance schema get web-frontend
   shoelace appliance schema rm web-frontend`,
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "set an appliance's schema from a file",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance schema set NAME -f FILE|-",
				Description: `Sets the schema of NAME to FILE's ("-f -" reads stdin), replacing any. The schema may be
written in JSON or in YAML (a .yaml or .yml file, or content that does not start with "{"):
the server keeps it as JSON, which "schema get" prints. In YAML, quote what must stay a
string ("8080"; an unquoted 8080 is a number, which no value matches: values are strings).
A schema that is not valid JSON Schema is refused, naming the problem; a schema may not $ref
files or URLs.
The schema is set even when the appliance's current keys break it: then a warning on stderr
says how (with --output json, in "warning"), and its next write must fix them. Needs an admin
token or one that may write appliances/NAME. Prints the revision.

EXAMPLES:
   shoelace appliance schema set web-frontend -f web-frontend.schema.json
   shoelace appliance schema set web-frontend -f web-frontend.schema.yaml`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "`FILE` with the JSON Schema, in JSON or YAML (- for stdin)"},
				},
				Action: e.schemaSet,
			},
			{
				Name:      "get",
				Usage:     "print an appliance's schema",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance schema get NAME",
				Description: `Prints the schema of NAME as it was set. An appliance with no schema exits 3.

EXAMPLES:
   shoelace appliance schema get web-frontend > web-frontend.schema.json`,
				Action: e.schemaGet,
			},
			{
				Name:      "rm",
				Usage:     "remove an appliance's schema",
				ArgsUsage: "NAME",
				UsageText: "shoelace appliance schema rm NAME",
				Description: `Removes the schema of NAME: its writes are no longer checked. An appliance with no schema
exits 3. Prints the revision.

EXAMPLES:
   shoelace appliance schema rm web-frontend`,
				Action: e.schemaRemove,
			},
		},
	}
}

func (e *cliEnv) schemaSet(c *cli.Context) error {
	name, err := applianceName(c)
	if err != nil {
		return err
	}
	body, file, err := e.readFileFlag(c, "set the schema of "+name)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("set the schema of %s: %s is empty (to remove the schema: shoelace appliance schema rm %s)", name, file, name)
	}
	s, err := e.connect(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	ct := contentTypeOf(file, body)
	if ct != api.ContentTypeYAML {
		ct = "application/schema+json"
	}
	res, err := s.client.SetSchema(s.ctx, name, body, ct)
	if err != nil {
		return err
	}
	if s.json {
		return printJSON(e.stdout, res)
	}
	if res.Warning != "" {
		fmt.Fprintf(e.stderr, "warning: %s\n", res.Warning)
	}
	return printRevision(e.stdout, false, res.Revision)
}

func (e *cliEnv) schemaGet(c *cli.Context) error {
	name, s, err := e.connectAppliance(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	data, _, err := s.client.Schema(s.ctx, name)
	if err != nil {
		return err
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	_, err = e.stdout.Write(data)
	return err
}

func (e *cliEnv) schemaRemove(c *cli.Context) error {
	name, s, err := e.connectAppliance(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	rev, err := s.client.DeleteSchema(s.ctx, name)
	if err != nil {
		return err
	}
	return printRevision(e.stdout, s.json, rev)
}
