package agentclient

import (
	"testing"
	"time"
)

func TestEncodeCommand(t *testing.T) {
	tests := []struct {
		name  string
		cmd   any
		async bool
		want  string
	}{
		{"nil sync is an empty body", nil, false, ""},
		{"nil async is an object", nil, true, `{"timeoutMs":1500}`},
		{"empty object", struct{}{}, true, `{"timeoutMs":1500}`},
		{"fields kept", map[string]int{"a": 1}, true, `{"timeoutMs":1500,"a":1}`},
		{"own timeoutMs wins", map[string]int{"timeoutMs": 7}, true, `{"timeoutMs":7}`},
		{"not an object", []int{1}, true, `[1]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeCommand(tt.cmd, tt.async, 1500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTombstonesForgetOldest(t *testing.T) {
	ts := newTombstones(2)
	ts.add("a", finishedCall{})
	ts.add("b", finishedCall{})
	ts.add("c", finishedCall{})
	if _, ok := ts.byID["a"]; ok || len(ts.byID) != 2 {
		t.Errorf("tombstones %v", ts.byID)
	}
}
