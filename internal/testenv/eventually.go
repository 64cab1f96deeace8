package testenv

import (
	"fmt"
	"testing"
	"time"
)

// pollInterval is how often Eventually checks its condition.
const pollInterval = 10 * time.Millisecond

// Eventually checks cond every 10ms until it returns true, and fails the test
// with t.Fatalf if it has not within timeout. msgAndArgs, if given, is a
// format string and its arguments describing what was awaited.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, describe(msgAndArgs))
			return
		}
		<-ticker.C
	}
}

func describe(msgAndArgs []any) string {
	if len(msgAndArgs) == 0 {
		return "(no description)"
	}
	if format, ok := msgAndArgs[0].(string); ok {
		return fmt.Sprintf(format, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs...)
}
