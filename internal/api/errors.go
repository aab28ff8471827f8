package api

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
)

// Error codes carried in {"error":{"code","message"}}. Each maps to one HTTP status.
const (
	CodeInvalidKey      = "invalid_key"
	CodeInvalidName     = "invalid_name"
	CodeInvalidValue    = "invalid_value"
	CodeInvalidBody     = "invalid_body"
	CodeInvalidRequest  = "invalid_request"
	CodeValueTooLarge   = "value_too_large"
	CodeBodyTooLarge    = "body_too_large"
	CodeTooLarge        = "too_large" // over a limit of the etcd cluster
	CodeNotFound        = "not_found"
	CodeCompacted       = "compacted" // a revision older than the store's history
	CodeConflict        = "conflict"
	CodeUnauthorized    = "unauthorized"
	CodeForbidden       = "forbidden"
	CodeMethod          = "method_not_allowed"
	CodeRateLimited     = "rate_limited"
	CodeTooManyWaiters  = "too_many_waiters"
	CodeMaintenance     = "maintenance"
	CodeUnavailable     = "unavailable"     // not carried out (a write was not applied): retry
	CodeOutcomeUnknown  = "outcome_unknown" // a write etcd may have applied, unconfirmed: check, then retry
	CodeShuttingDown    = "shutting_down"
	CodeInternal        = "internal"
	CodeUnsupportedType = "unsupported_media_type"
	CodeInvalidSchema   = "invalid_schema"   // an appliance schema that is not valid JSON Schema
	CodeSchemaViolation = "schema_violation" // a write that would break the appliance's schema
)

var codeStatus = map[string]int{
	CodeInvalidKey:        http.StatusBadRequest,
	CodeInvalidName:       http.StatusBadRequest,
	CodeInvalidValue:      http.StatusBadRequest,
	CodeInvalidBody:       http.StatusBadRequest,
	CodeInvalidRequest:    http.StatusBadRequest,
	CodeValueTooLarge:     http.StatusRequestEntityTooLarge,
	CodeBodyTooLarge:      http.StatusRequestEntityTooLarge,
	CodeTooLarge:          http.StatusRequestEntityTooLarge,
	CodeNotFound:          http.StatusNotFound,
	CodeCompacted:         http.StatusGone,
	CodeConflict:          http.StatusConflict,
	CodeUnauthorized:      http.StatusUnauthorized,
	CodeForbidden:         http.StatusForbidden,
	CodeMethod:            http.StatusMethodNotAllowed,
	CodeRateLimited:       http.StatusTooManyRequests,
	CodeTooManyWaiters:    http.StatusServiceUnavailable,
	CodeMaintenance:       http.StatusServiceUnavailable,
	CodeUnavailable:       http.StatusServiceUnavailable,
	CodeOutcomeUnknown:    http.StatusServiceUnavailable,
	CodeShuttingDown:      http.StatusServiceUnavailable,
	CodeInternal:          http.StatusInternalServerError,
	CodeUnsupportedType:   http.StatusUnsupportedMediaType,
	CodeInvalidSchema:     http.StatusBadRequest,
	CodeSchemaViolation:   http.StatusUnprocessableEntity,
	CodeRolloutInProgress: http.StatusConflict,
}

// Codes returns every error code, sorted: what the docs' tables of codes must cover.
func Codes() []string { return slices.Sorted(maps.Keys(codeStatus)) }

// Sentinel errors; match them with errors.Is, which compares codes.
var (
	ErrNotFound    = &Error{Code: CodeNotFound, Message: "not found"}
	ErrConflict    = &Error{Code: CodeConflict, Message: "conflict"}
	ErrUnavailable = &Error{Code: CodeUnavailable, Message: "unavailable"}
	ErrForbidden   = &Error{Code: CodeForbidden, Message: "forbidden"}
)

// Error is an API error: a code, a message for humans, and the HTTP status it maps to.
// The server writes it as {"error":{"code","message"}}; the client decodes it back.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Status is the HTTP status; 0 means the one of Code.
	Status int `json:"-"`
	// RetryAfter, when set, is sent as Retry-After (seconds).
	RetryAfter int `json:"-"`
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Message }

// Is matches errors by code, so errors.Is(err, api.ErrNotFound) holds for any not_found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// HTTPStatus is the status the error is answered with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := codeStatus[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// AsError returns err as an *Error, wrapping unknown errors as internal ones.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}
