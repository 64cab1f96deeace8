package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"mplane/errcode"
)

// StatusError is an answer of the API that is not the success the contract
// promises: an error status, or a success whose body could not be read as
// the contract's JSON. It unwraps to Err, so errcode.Has(err,
// errcode.Unauthenticated) and errors.As(err, &*errcode.Error) work.
type StatusError struct {
	// Op is what the client was doing: "create zones", "job 5f0c...".
	Op string
	// Method and URL of the request that got the answer.
	Method, URL string
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Err is the {"error": {...}} of the answer; nil when the body was not
	// an API error (a proxy's HTML page, a truncated or malformed body).
	Err *errcode.Error
	// Body holds the first bytes of the body when Err is nil.
	Body string
	// Problem says what was wrong with a body that is not an API error.
	Problem string
}

func (e *StatusError) Error() string {
	status := strconv.Itoa(e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		status += " " + t
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: HTTP %s: %s", e.Op, status, e.Err.Error())
	}
	return fmt.Sprintf("%s: %s %s: HTTP %s: %s: %q", e.Op, e.Method, e.URL, status, e.Problem, e.Body)
}

// Unwrap gives the API's error, if the answer had one.
func (e *StatusError) Unwrap() error {
	if e.Err == nil {
		return nil
	}
	return e.Err
}

// StatusCode is the HTTP status of the answer behind err (0 when err does
// not come from an answer: a transport failure or a local check).
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

// IsUnauthenticated reports whether err says the session is missing,
// invalid or expired (HTTP 401 or errcode.Unauthenticated).
func IsUnauthenticated(err error) bool {
	return StatusCode(err) == http.StatusUnauthorized || errcode.Has(err, errcode.Unauthenticated)
}

// errorFromAnswer turns an error status into a *StatusError.
func errorFromAnswer(r request, a *answer) *StatusError {
	se := &StatusError{Op: r.op, Method: r.method, URL: r.url, StatusCode: a.status}
	var body struct {
		Error *errcode.Error `json:"error"`
	}
	if err := json.Unmarshal(a.body, &body); err == nil && body.Error != nil && body.Error.Code != "" {
		se.Err = body.Error
		return se
	}
	se.Problem = "not an API error answer"
	if ct := a.header.Get("Content-Type"); ct != "" {
		se.Problem += " (" + ct + ")"
	}
	se.Body = snippet(a.body)
	return se
}

// badAnswer is a success status whose body is not what the contract says.
func badAnswer(r request, a *answer, err error) *StatusError {
	return &StatusError{
		Op: r.op, Method: r.method, URL: r.url, StatusCode: a.status,
		Problem: "unexpected answer: " + err.Error(), Body: snippet(a.body),
	}
}

// snippet is the first bytes of body, cut at a rune boundary.
func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) <= maxBodySnippet {
		return s
	}
	cut := maxBodySnippet
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// invalid is a local check of the caller's arguments, before any request.
func invalid(op, format string, args ...any) error {
	return fmt.Errorf("%s: %w", op, errcode.New(errcode.InvalidArgument, format, args...))
}

func notFound(op, resourcePath, uuid string) error {
	return fmt.Errorf("%s: %w", op, errcode.New(errcode.ResourceNotFound, "no %s with uuid %s", strings.Trim(resourcePath, "/"), uuid))
}
