package errcode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestCatalogueCodesUniqueAndDescribed(t *testing.T) {
	seen := map[Code]bool{}
	for _, e := range Catalogue() {
		if seen[e.Code] {
			t.Fatalf("duplicate code %s", e.Code)
		}
		seen[e.Code] = true
		if e.Description == "" || e.HTTPStatus == 0 {
			t.Errorf("%s: missing description or HTTP status", e.Code)
		}
	}
	for _, c := range []Code{Internal, Timeout, InvalidArgument, NodeUnavailable} {
		if !seen[c] {
			t.Errorf("code %s not in catalogue", c)
		}
	}
}

func TestJSONRoundTripKeepsChain(t *testing.T) {
	e := Wrap(AgentError, New(Timeout, "agent 10.0.0.1 did not answer"), "start vm %s", "v1")
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got Error
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Code != AgentError || got.Details != "start vm v1" {
		t.Fatalf("outer = %+v", got)
	}
	if got.Cause == nil || got.Cause.Code != Timeout || got.Cause.Details != "agent 10.0.0.1 did not answer" {
		t.Fatalf("cause = %+v", got.Cause)
	}
	if !Has(&got, Timeout) || !Has(&got, AgentError) || Has(&got, Internal) {
		t.Fatalf("Has on decoded chain wrong: %v", &got)
	}
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	for _, k := range []string{"code", "description", "details", "cause"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON form lacks %q: %s", k, data)
		}
	}
}

func TestFrom(t *testing.T) {
	base := New(InvalidArgument, "cpuNum must be > 0")
	tests := []struct {
		name    string
		in      error
		code    Code
		details string
	}{
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), Timeout, "call: context deadline exceeded"},
		{"canceled", context.Canceled, Canceled, "context canceled"},
		{"plain", errors.New("disk on fire"), Internal, "disk on fire"},
		{"catalogued", base, InvalidArgument, "cpuNum must be > 0"},
		{"wrapped catalogued", fmt.Errorf("create vm: %w", base), InvalidArgument, "create vm: cpuNum must be > 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := From(tc.in)
			if got.Code != tc.code || got.Details != tc.details {
				t.Fatalf("From(%v) = %s / %q, want %s / %q", tc.in, got.Code, got.Details, tc.code, tc.details)
			}
		})
	}
	if From(nil) != nil {
		t.Fatal("From(nil) must be nil")
	}
}

func TestRetryableAndStatus(t *testing.T) {
	if !IsRetryable(fmt.Errorf("x: %w", New(NodeUnavailable, "node n1 left"))) {
		t.Error("NodeUnavailable must be retryable")
	}
	if IsRetryable(New(InvalidArgument, "")) {
		t.Error("InvalidArgument must not be retryable")
	}
	if InvalidArgument.HTTPStatus() != http.StatusBadRequest || Code("X.1").HTTPStatus() != 500 {
		t.Error("HTTP status mapping wrong")
	}
	if !errors.Is(fmt.Errorf("w: %w", New(Timeout, "a")), New(Timeout, "b")) {
		t.Error("errors.Is must match by code")
	}
	if CodeOf(errors.New("x")) != Internal {
		t.Error("CodeOf plain error must be Internal")
	}
}

func TestErrorString(t *testing.T) {
	e := Wrap(Internal, New(Timeout, "inner"), "outer")
	want := "SYS.1000 internal error (outer): SYS.1001 operation timed out (inner)"
	if e.Error() != want {
		t.Fatalf("got %q want %q", e.Error(), want)
	}
}

// TestOrInternal: nil stays nil, an error with a code anywhere in its
// chain passes unchanged, any other becomes Internal with the context and
// its cause.
func TestOrInternal(t *testing.T) {
	if err := OrInternal(nil, "x"); err != nil {
		t.Fatalf("OrInternal(nil) = %v", err)
	}
	coded := fmt.Errorf("while writing: %w", New(InvalidState, "taken"))
	if got := OrInternal(coded, "create %s", "a"); got != coded {
		t.Fatalf("a coded error became %v", got)
	}
	plain := errors.New("disk full")
	got := OrInternal(plain, "create %s", "a")
	if CodeOf(got) != Internal || !strings.Contains(got.Error(), "create a") || !errors.Is(got, plain) {
		t.Fatalf("OrInternal(plain) = %v (code %s); want Internal naming the work, caused by disk full", got, CodeOf(got))
	}
}
