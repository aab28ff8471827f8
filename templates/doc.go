// Package templates renders an appliance's view through Go text/template.
//
// Parse a template once with Parse, then Execute it for each view. Execute returns the
// output and the inputs the template read (Result.Keys, Result.Prefixes), so that the
// agent re-renders a template only when Result.Changed reports that one of its inputs
// changed. A key read without a default that is absent fails the whole render.
//
// The function set is Shoelace's own (key, keyOr, exists, ls, keys, tree, env, appliance,
// instance, revision, toJSON/fromJSON, toYAML/fromYAML, file when allowed), all of
// sprig's, and aliases from confd (getv, getvs, gets, get, lsdir, …) and consul-template
// (keyOrDefault, keyExists, ls, tree, safeLs, safeTree, explode, …) with the semantics
// of their origin. README.md in this directory documents every function, the name
// clashes with sprig and how they are resolved, and where an origin's behaviour cannot
// hold in Shoelace.
//
// The package imports only the standard library, sprig, yaml.v3 and internal/api: it is
// linked into the small agent binary. It does no file I/O except through the file and
// fileExists functions, which need Options.AllowFile.
package templates
