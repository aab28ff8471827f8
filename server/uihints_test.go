package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// A page that leaves instances or keys out names the command that lists them all, with the
// appliance's name: "shoelace appliance rollout" (no subcommand) printed the command's help and
// exited 2, "shoelace appliance instances" and "shoelace appliance get" without a name were
// usage errors.
func TestUI_LeftOutHintsNameARunnableCommand(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	for i := range uiMaxKeys {
		if i%1000 == 0 {
			ops := make([]string, 0, 1000)
			for j := i; j < i+1000; j++ {
				ops = append(ops, fmt.Sprintf(`{"op":"put","key":"appliances/web/k/%05d","value":"v"}`, j))
			}
			f.must(f.do("POST", "/v1/txn", `{"ops":[`+strings.Join(ops, ",")+`]}`, "Content-Type", "application/json"), 200, nil)
		}
	}
	enrollFleet(t, f, uiMaxInstances+1)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&manual", "81"), http.StatusAccepted, nil)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	page := b.get("/ui/appliances/web")
	mustStatus(t, page, 200)
	for _, want := range []string{
		"more keys, not shown (<code>shoelace appliance get web</code> shows the whole view)",
		"more instances, not listed here (<code>shoelace appliance rollout status web</code> lists them all)",
		"(<code>shoelace appliance instances web</code> lists them all)",
	} {
		if !strings.Contains(string(page.body), want) {
			t.Errorf("the page does not say %q", want)
		}
	}
}
