package errcode

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Error is the one structured error of mplane. Its JSON form is used both in
// bus replies and in REST answers.
type Error struct {
	Code        Code   `json:"code"`
	Description string `json:"description"`
	Details     string `json:"details,omitempty"`
	Retryable   bool   `json:"retryable,omitempty"`
	Cause       *Error `json:"cause,omitempty"`

	// wrapped keeps a local Go error for errors.Is/As inside one process; it
	// is not sent over the wire (the wire form keeps its text in Cause).
	wrapped error
}

// New returns an error of the given code with details built from format.
func New(code Code, format string, args ...any) *Error {
	e := fromCode(code)
	if format != "" {
		e.Details = fmt.Sprintf(format, args...)
	}
	return e
}

// Wrap returns an error of the given code caused by cause. Internal
// wrapping a cause that says the database is unavailable (DBUnavailable)
// takes that code instead: what failed is the system, not the code path,
// and the caller may try again.
func Wrap(code Code, cause error, format string, args ...any) *Error {
	if code == Internal && Has(cause, DBUnavailable) {
		code = DBUnavailable
	}
	e := New(code, format, args...)
	if cause != nil {
		e.Cause = From(cause)
		e.wrapped = cause
	}
	return e
}

// WithLocal attaches a local Go error to e for errors.Is and errors.As
// inside this process, without changing what is sent on the wire (no cause
// is added); it returns e.
func WithLocal(e *Error, local error) *Error {
	e.wrapped = local
	return e
}

// OrInternal is err unless it is an error without a code: nil stays nil
// and an error whose chain has an *Error is answered as is; any other
// becomes Internal, described by format and args (what was being done),
// with err as its cause.
func OrInternal(err error, format string, args ...any) error {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return Wrap(Internal, err, format, args...)
}

func fromCode(code Code) *Error {
	entry, ok := byCode[code]
	if !ok {
		return &Error{Code: code, Description: "unknown error code"}
	}
	return &Error{Code: code, Description: entry.Description, Retryable: entry.Retryable}
}

// From converts any error to an *Error: an *Error in the chain is returned
// as is; context deadline and cancellation become Timeout and Canceled;
// anything else becomes Internal with the error text as details.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		if err == error(e) {
			return e
		}
		// Keep the context that wrappers added ("start vm x: ...").
		prefix := strings.TrimSuffix(err.Error(), ": "+e.Error())
		if prefix == err.Error() {
			return e
		}
		c := *e
		if c.Details == "" {
			c.Details = prefix
		} else {
			c.Details = prefix + ": " + c.Details
		}
		return &c
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: Timeout, Description: byCode[Timeout].Description, Details: err.Error(), wrapped: err}
	case errors.Is(err, context.Canceled):
		return &Error{Code: Canceled, Description: byCode[Canceled].Description, Details: err.Error(), wrapped: err}
	}
	return &Error{Code: Internal, Description: byCode[Internal].Description, Details: err.Error(), wrapped: err}
}

// Error formats the error and its cause chain on one line.
func (e *Error) Error() string {
	var b strings.Builder
	for c := e; c != nil; c = c.Cause {
		if c != e {
			b.WriteString(": ")
		}
		b.WriteString(string(c.Code))
		b.WriteString(" ")
		b.WriteString(c.Description)
		if c.Details != "" {
			b.WriteString(" (")
			b.WriteString(c.Details)
			b.WriteString(")")
		}
	}
	return b.String()
}

// Unwrap gives the local Go cause if there is one, else the wire cause.
func (e *Error) Unwrap() error {
	if e.wrapped != nil {
		return e.wrapped
	}
	if e.Cause != nil {
		return e.Cause
	}
	return nil
}

// Is matches another *Error by code, so errors.Is(err, errcode.New(errcode.Timeout, ""))
// holds for any timeout; prefer Has for readability.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Has reports whether err or any error in its chain carries code.
func Has(err error, code Code) bool {
	for err != nil {
		if e, ok := err.(*Error); ok && e.Code == code {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				if Has(x, code) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// CodeOf is the code of the outermost *Error in err's chain, or Internal;
// "" for a nil err.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return From(err).Code
}

// IsRetryable reports whether the outermost *Error of err is retryable.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}
