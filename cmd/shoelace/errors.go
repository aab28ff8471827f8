package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/complete"
)

// Exit codes that scripts can rely on; exitCodesHelp documents them in --help.
const (
	exitOK          = 0
	exitError       = 1 // anything else, including input the server refused (400, 413)
	exitUsage       = 2 // unknown command or flag, wrong arguments, unusable token file
	exitNotFound    = 3 // the key, appliance or token does not exist
	exitConflict    = 4 // a --cas guard did not hold
	exitAuth        = 5 // no token, unknown token, or the token may not do this
	exitUnavailable = 6 // server unreachable, unavailable, in maintenance or rate limiting
	exitUnknown     = 7 // a write etcd may have applied: outcome unknown, check before retrying
	exitInterrupted = 130
)

const exitCodesHelp = `EXIT CODES:
   0  success
   1  other error, including a key, value or body the server refused (400, 413), a write
      that breaks the appliance's schema (422 schema_violation), or a server certificate that
      does not verify (--ca-file) or an https:// --addr of a plain HTTP server
   2  usage error: unknown command or flag, wrong arguments, insecure token file
   3  not found: the key, appliance or token does not exist (404)
   4  conflict: a --cas guard did not hold (409)
   5  unauthorized or forbidden: missing or unknown token, or not allowed (401, 403)
   6  unavailable: server unreachable, maintenance mode, etcd away, rate limited (503, 429);
      a write was not applied: retry it
   7  outcome unknown: etcd may have applied the write but did not confirm it (503
      outcome_unknown), or the write was sent and its answer never came (--timeout, a broken
      connection, a proxy's 502 or 504): read the key (or the appliance) to check, then retry
      if needed;
      or a write refused because a rollout of the appliance is in progress (409
      rollout_in_progress: retrying does not help until it ends); or, for appliance wait,
      a rollout that halted or was aborted
   130  interrupted (Ctrl-C, SIGTERM); a write interrupted after it was sent says that its
      outcome is unknown: check it as after exit 7`

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeError carries an explicit exit code (such as a failed health check).
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// exitCode maps an error returned by run to the process exit code. It is the only place that does.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ec *exitCodeError
	if errors.As(err, &ec) {
		return ec.code
	}
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, complete.ErrUsage) {
		return exitUsage
	}
	if errors.Is(err, context.Canceled) {
		return exitInterrupted
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		if ae.Code == api.CodeOutcomeUnknown || ae.Code == api.CodeRolloutInProgress {
			return exitUnknown
		}
		switch ae.HTTPStatus() {
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusConflict:
			return exitConflict
		case http.StatusUnauthorized, http.StatusForbidden:
			return exitAuth
		case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
			return exitUnavailable
		}
		return exitError
	}
	var te *client.TransportError
	if errors.As(err, &te) {
		if te.Sent {
			return exitUnknown // a write that left and was not answered
		}
		if misconfigured(te) != "" {
			return exitError // retrying cannot help: --addr or --ca-file must change
		}
		return exitUnavailable
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return exitUnavailable
	}
	return exitError
}

// foreignAnswer returns the API error in err when the answer did not come from one of the
// Shoelace API's routes: the server's "no such route" (a path in --addr, such as …/v1), or a
// body that is not Shoelace's error JSON (another service at --addr). Answers that mean "try
// again later" (429, 502, 503, 504) keep their meaning, whoever sent them.
func foreignAnswer(err error) (*api.Error, bool) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return nil, false
	}
	switch {
	case ae.HTTPStatus() == http.StatusNotFound && strings.HasPrefix(ae.Message, "no such route"):
		return ae, true
	case strings.HasPrefix(ae.Message, "server answered "): // the client's text for a non-API body
		switch ae.HTTPStatus() {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return nil, false
		}
		return ae, true
	}
	return nil, false
}

// errorLine renders err as the one line written to stderr.
func errorLine(err error) string {
	msg := err.Error()
	var te *client.TransportError
	if errors.Is(err, context.Canceled) {
		if errors.As(err, &te) && te.Sent {
			// Ctrl-C, or a CI job's timeout, after the write left: the server may apply it.
			return "shoelace: interrupted after the write was sent: its outcome is unknown; read the key or the appliance to check, then retry if needed"
		}
		return "shoelace: interrupted"
	}
	if errors.As(err, &te) {
		var ue *url.Error
		if errors.As(te.Err, &ue) {
			msg = "cannot reach the server: " + ue.Err.Error()
			if errors.Is(ue.Err, context.DeadlineExceeded) {
				msg = "cannot reach the server: no answer before the timeout (--timeout)"
			}
		} else {
			msg = "cannot reach the server: " + te.Err.Error()
		}
		if hint := misconfigured(te); hint != "" && !te.Sent {
			if m := client.Misconfigured(te); m == client.Redirected || m == client.WriteRedirected { // the server answered: with a redirect
				msg = strings.TrimPrefix(msg, "cannot reach the server: ")
			}
			msg += ": " + hint
		}
		if te.Sent {
			why := strings.TrimPrefix(msg, "cannot reach the server: ")
			msg = "the write was sent but not answered (" + why + "): its outcome is unknown; read the key or the appliance to check, then retry if needed"
		}
		if te.Prior != "" { // why it was retried, which the failure of the last try does not say
			msg += " (the server's answer to an earlier try: " + te.Prior + ")"
		}
	}
	msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(strings.TrimSpace(msg))
	if strings.HasPrefix(msg, "shoelace ") { // already names the command, as service errors do
		return msg
	}
	return "shoelace: " + msg
}

// misconfigured says what to change when the transport error te cannot go away by itself: the
// server's certificate does not verify, or --addr says https to a plain HTTP server. "" when
// it may (a refused connection, a timeout). Such errors exited 6, which retry loops retry.
func misconfigured(te *client.TransportError) string {
	switch client.Misconfigured(te) {
	case client.CertHostname:
		return "the server's certificate does not name the host in --addr (SHOELACE_ADDR): use a name it does"
	case client.CertUntrusted:
		return "the server's certificate does not verify: give --ca-file (SHOELACE_CA_FILE) the CA that signed it"
	case client.PlainHTTPServer:
		return "the server speaks plain HTTP: use http:// in --addr (SHOELACE_ADDR)"
	case client.Redirected:
		return "if the server moved, give its new address in --addr (SHOELACE_ADDR)"
	case client.WriteRedirected:
		return "a Shoelace server never redirects a write: give --addr (SHOELACE_ADDR) the address that serves its API, not a proxy's that redirects"
	}
	return ""
}

// counted is n and noun, plural unless n is 1: "1 key", "2 keys".
func counted(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
