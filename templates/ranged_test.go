package templates

import (
	"strings"
	"testing"
	"time"
)

// A render's ranges go through at most MaxRanged items in all, nested ones at each of their
// passes: nested loops over a key's number (each within MaxItems) fail the render at once, as
// they must, instead of going through 2^40 items for hours with the agent's loop held. Within
// the bound, ranges render as before.
func TestExecute_RangesBoundedInAll(t *testing.T) {
	// The bounds lowered, so that the test takes seconds under -race on a busy machine too; what
	// is tested is that they are counted in all (the values are the code's otherwise).
	defer func(r uint64, b int64) { maxRanged, maxBuiltInAll = r, b }(maxRanged, maxBuiltInAll)
	maxRanged, maxBuiltInAll = 1<<18, 64<<20
	keys := map[string]string{"n": "1048576", "small": "1000"}
	for _, tc := range []struct {
		mode, text string
	}{
		{ModeNative, `{{ $n := key "n" | atoi }}{{ range loop $n }}{{ range loop $n }}{{ end }}{{ end }}`},
		{ModeNative, `{{ $n := key "n" | atoi }}{{ range $n }}{{ range $n }}{{ end }}{{ end }}`},
		{ModeConsulTemplate, `{{ $n := key "n" | parseInt }}{{ range $i := loop $n }}{{ range loop $n }}{{ end }}{{ end }}`},
		{ModeConfd, `{{ $l := seq 1 (atoi (getv "/n")) }}{{ range $l }}{{ range $l }}{{ end }}{{ end }}`},
		{ModeConfd, `{{ $l := seq 1 (atoi (getv "/small")) }}{{ range $l }}{{ range $l }}{{ range $l }}{{ end }}{{ end }}{{ end }}`},
	} {
		start := time.Now()
		_, err := mustParse(t, tc.text, Options{Functions: tc.mode}).Execute(Data{Keys: keys})
		if err == nil || !strings.Contains(err.Error(), "ranges go through more than 262144 items in all") {
			t.Errorf("%s %s: %v, want the bound on ranges", tc.mode, tc.text, err)
		}
		if took := time.Since(start); took > time.Minute {
			t.Errorf("%s %s: took %s", tc.mode, tc.text, took)
		}
	}
	// Work per item is bounded too: the strings a render's calls build, and its time.
	start := time.Now()
	_, err := mustParse(t, `{{range loop 1000}}{{range loop 40}}{{$x := printf "%0100000d" 0}}{{end}}{{end}}`, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: keys})
	if err == nil || !strings.Contains(err.Error(), "function calls built over 67108864 bytes of strings in all") {
		t.Errorf("100 KB built at each of 40,000 items: %v", err)
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("100 KB built at each of 40,000 items: took %s", took)
	}
	defer func(d time.Duration) { maxRenderTime = d }(maxRenderTime)
	maxRenderTime, maxRanged = 50*time.Millisecond, MaxRanged
	if _, err := mustParse(t, `{{range loop 1000000}}{{$x := printf "%d" 1}}{{end}}`, Options{Functions: ModeConsulTemplate}).Execute(Data{Keys: keys}); err == nil ||
		!strings.Contains(err.Error(), "the render ran for over 50ms") {
		t.Errorf("a render past its time: %v", err)
	}
	maxRenderTime = MaxRenderTime
	// {{template}} nests 100 deep at most (text/template's own bound is 100,000, where a range at
	// each level ran for minutes), and its error is said once, not at each level.
	for _, mode := range []string{ModeNative, ModeConfd, ModeConsulTemplate} {
		start := time.Now()
		_, err := mustParse(t, `{{ define "r" }}{{ range 10 }}{{ template "r" . }}{{ end }}{{ end }}{{ template "r" }}`,
			Options{Functions: mode}).Execute(Data{Keys: keys})
		if err == nil || !strings.Contains(err.Error(), `template "r": nested more than 100 deep`) || strings.Count(err.Error(), "error calling") > 2 {
			t.Errorf("%s: recursion: %v", mode, err)
		}
		if took := time.Since(start); took > time.Minute {
			t.Errorf("%s: recursion took %s", mode, took)
		}
	}
	maxRanged = MaxRanged // a million items, as a real bound lets through
	res, err := mustParse(t, `{{ $n := key "small" | atoi }}{{ $c := 0 }}{{ range $i := loop $n }}{{ range $n }}{{ end }}{{ end }}{{ range $k, $v := tree "" }}{{ $k }}{{ end }}done`,
		Options{}).Execute(Data{Keys: keys})
	if err != nil || !strings.HasSuffix(string(res.Output), "done") {
		t.Fatalf("a million items: %v", err)
	}
}
