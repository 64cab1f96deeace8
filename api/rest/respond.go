package rest

import (
	"encoding/json"
	"net/http"

	"mplane/errcode"
)

// ContentType is the media type of every answer.
const ContentType = "application/json; charset=utf-8"

// ErrorBody is the JSON form of every error answer: {"error": {...}}.
type ErrorBody struct {
	Error *errcode.Error `json:"error"`
}

// WriteJSON answers status with v encoded as JSON. v is encoded before
// anything is written, so if it cannot be encoded the answer is a 500
// catalogue error instead.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		e := errcode.Wrap(errcode.Internal, err, "encode answer")
		data, _ = json.Marshal(ErrorBody{Error: e}) // an *errcode.Error always encodes
		status = e.Code.HTTPStatus()
	}
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// WriteError answers {"error": {...}} with the status of err's catalogue
// code. err is converted with errcode.From: an *errcode.Error anywhere in
// its chain is kept (with the context of wrappers added to its details);
// context errors become Timeout/Canceled; anything else becomes Internal.
func WriteError(w http.ResponseWriter, err error) {
	if err == nil {
		err = errcode.New(errcode.Internal, "WriteError called without an error")
	}
	e := errcode.From(err)
	WriteJSON(w, e.Code.HTTPStatus(), ErrorBody{Error: e})
}

// invalid is the one constructor of the caller-mistake errors of this package.
func invalid(format string, args ...any) *errcode.Error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}
