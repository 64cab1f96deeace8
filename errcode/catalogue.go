package errcode

import "net/http"

// Code is a stable error code such as "SYS.1001".
type Code string

// The catalogue. Append only: a released code keeps its meaning forever.
const (
	Internal          Code = "SYS.1000"
	Timeout           Code = "SYS.1001"
	Canceled          Code = "SYS.1002"
	UnknownMessage    Code = "SYS.1003"
	MalformedMessage  Code = "SYS.1004"
	ResourceNotFound  Code = "SYS.1005"
	InvalidState      Code = "SYS.1006"
	InvalidArgument   Code = "SYS.1007"
	Unauthenticated   Code = "SYS.1008"
	PermissionDenied  Code = "SYS.1009"
	Conflict          Code = "SYS.1010"
	Busy              Code = "SYS.1011"
	NodeUnavailable   Code = "SYS.1012"
	BusUnavailable    Code = "SYS.1013"
	AgentError        Code = "SYS.1014"
	CapacityExhausted Code = "SYS.1015"
	ShuttingDown      Code = "SYS.1016"
	OutcomeUnknown    Code = "SYS.1017"
	DBUnavailable     Code = "SYS.1018"
	QuotaExceeded     Code = "SYS.1019"
)

// Entry describes one code of the catalogue.
type Entry struct {
	Code        Code   `json:"code"`
	Description string `json:"description"`
	// Retryable says whether the same request may succeed if sent again
	// unchanged (the failure was about the system, not the request).
	Retryable bool `json:"retryable"`
	// HTTPStatus is the status the REST API answers with for a synchronous
	// failure of this kind.
	HTTPStatus int `json:"httpStatus"`
}

var catalogue = []Entry{
	{Internal, "internal error", false, http.StatusInternalServerError},
	{Timeout, "operation timed out", false, http.StatusGatewayTimeout},
	{Canceled, "operation canceled", false, http.StatusServiceUnavailable},
	{UnknownMessage, "no handler for this message", false, http.StatusNotImplemented},
	{MalformedMessage, "message could not be decoded", false, http.StatusBadRequest},
	{ResourceNotFound, "resource not found", false, http.StatusNotFound},
	{InvalidState, "operation not allowed in the resource's current state", false, http.StatusConflict},
	{InvalidArgument, "invalid argument", false, http.StatusBadRequest},
	{Unauthenticated, "missing, invalid or expired session", false, http.StatusUnauthorized},
	{PermissionDenied, "permission denied", false, http.StatusForbidden},
	{Conflict, "conflicting change; read the resource again and retry", true, http.StatusConflict},
	{Busy, "too much pending work for this resource", true, http.StatusTooManyRequests},
	{NodeUnavailable, "management node unavailable", true, http.StatusServiceUnavailable},
	{BusUnavailable, "message bus unavailable", true, http.StatusServiceUnavailable},
	{AgentError, "agent reported an error", false, http.StatusBadGateway},
	{CapacityExhausted, "not enough capacity", false, http.StatusConflict},
	{ShuttingDown, "management node is shutting down", true, http.StatusServiceUnavailable},
	{OutcomeUnknown, "the operation may or may not have run; read the resource to learn its state before trying again", false, http.StatusGatewayTimeout},
	{DBUnavailable, "database unavailable; try again", true, http.StatusServiceUnavailable},
	{QuotaExceeded, "the account's quota would be exceeded", false, http.StatusForbidden},
}

var byCode = func() map[Code]Entry {
	m := make(map[Code]Entry, len(catalogue))
	for _, e := range catalogue {
		if _, dup := m[e.Code]; dup {
			panic("errcode: duplicate code " + string(e.Code))
		}
		m[e.Code] = e
	}
	return m
}()

// Catalogue returns every entry, in code order.
func Catalogue() []Entry {
	out := make([]Entry, len(catalogue))
	copy(out, catalogue)
	return out
}

// Lookup returns the entry of a code; ok is false for a code not in the
// catalogue (for example one sent by a newer node).
func Lookup(c Code) (Entry, bool) {
	e, ok := byCode[c]
	return e, ok
}

// HTTPStatus is the REST status for a code (500 for an unknown code).
func (c Code) HTTPStatus() int {
	if e, ok := byCode[c]; ok {
		return e.HTTPStatus
	}
	return http.StatusInternalServerError
}
