package portal

import (
	"testing"
	"time"

	"mplane/errcode"
)

func TestSubmitLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newSubmitLimiter(10) // 10 a second, bursts of 20
	l.now = func() time.Time { return now }
	for i := 0; i < 20; i++ {
		if _, err := l.allow("a"); err != nil {
			t.Fatalf("call %d of the burst: %v", i+1, err)
		}
	}
	wait, err := l.allow("a")
	if errcode.CodeOf(err) != errcode.Busy || wait != 100*time.Millisecond {
		t.Fatalf("past the burst: %v, wait %s; want Busy and 100ms", err, wait)
	}
	if _, err := l.allow("b"); err != nil {
		t.Fatalf("another account is not limited by the first: %v", err)
	}
	now = now.Add(250 * time.Millisecond) // 2.5 tokens back
	for i := 0; i < 2; i++ {
		if _, err := l.allow("a"); err != nil {
			t.Fatalf("after 250ms, call %d: %v", i+1, err)
		}
	}
	if _, err := l.allow("a"); err == nil {
		t.Fatal("a third call after 250ms allowed")
	}
	now = now.Add(2 * time.Minute)
	if _, err := l.allow("c"); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.buckets["b"]; ok {
		t.Error("an idle bucket was kept past a minute")
	}
	var none *submitLimiter
	if _, err := none.allow("a"); err != nil {
		t.Errorf("no limiter: %v", err)
	}
	if _, err := newSubmitLimiter(0).allow("a"); err != nil {
		t.Errorf("rate 0: %v", err)
	}
}
