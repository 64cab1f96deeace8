// Package errcode is mplane's error catalogue: every error that crosses the
// bus or the REST API is an *Error with a stable code from catalogue.go, a
// description, details, an optional cause chain and a retryable flag.
//
// One JSON form is used for bus replies and REST answers:
//
//	{"code":"SYS.1001","description":"operation timed out","details":"...","retryable":false,"cause":{...}}
//
// Codes never change meaning once released; new codes are appended to the
// table in catalogue.go, which is the single source of truth (docs and the
// REST layer's HTTP status mapping read it).
package errcode
