// Package templates renders an appliance's view through Go text/template.
//
// Parse a template once with Parse, then Execute it for each view. Execute returns the
// output and the inputs the template read (Result.Keys, Result.Prefixes), so that the
// agent re-renders a template only when Result.Changed reports that one of its inputs
// changed. A key read without a default that is absent fails the whole render.
//
// Options.Functions picks the function set. Native (the default) is Shoelace's own (key,
// keyOr, exists, ls, keys, tree, env, appliance, instance, revision, fromJSON, fromYAML,
// file when allowed), all of sprig's, consul-template's helpers (which win where a name
// clashes) and aliases from confd (getv, getvs, gets, get, lsdir, …). ModeConfd is confd
// v0.16.0's function map and ModeConsulTemplate consul-template v0.41.1's KV and plain
// functions with sprig under sprig_*, each with its peer's signatures and results;
// functions that cannot behave as in the peer are refused at parse time. README.md in
// this directory documents every function, the modes, the name clashes and how they are
// resolved, and how the peers' own tests check the modes against the real tools.
//
// The package imports only the standard library, sprig, yaml.v3 and yaml.v2, BurntSushi's
// TOML encoder, golang.org/x/text's title casing, mergo and internal/api: it is linked into
// the small agent binary. It does no file I/O except through file and fileExists, which
// need Options.AllowFile.
package templates
