package vm

import (
	"strings"
	"testing"

	"mplane/errcode"
)

func TestStateMachine(t *testing.T) {
	tests := []struct {
		op, from string
		ok       bool
	}{
		{"start", StateStopped, true},
		{"start", StateRunning, false},
		{"stop", StateRunning, true},
		{"stop", StateStopped, false},
		{"reboot", StateRunning, true},
		{"reboot", StateStopped, false},
		{"destroy", StateRunning, true},
		{"destroy", StateStopped, true},
		{"destroy", StateDestroyed, false},
		{"destroy", StateStarting, false},
		{"expunge", StateDestroyed, true},
		{"expunge", StateRunning, false},
	}
	for _, tc := range tests {
		err := checkTransition("v1", tc.op, tc.from)
		if tc.ok != (err == nil) {
			t.Errorf("%s from %s: %v, want ok=%v", tc.op, tc.from, err, tc.ok)
		}
		if err != nil && (errcode.CodeOf(err) != errcode.InvalidState || !strings.Contains(err.Error(), "it is "+tc.from)) {
			t.Errorf("%s from %s: %v, want SYS.1006 naming the state", tc.op, tc.from, err)
		}
	}
	for op := range allowedFrom {
		if transitional[op] == "" {
			t.Errorf("operation %s has no transitional state", op)
		}
	}
}

func TestCreateParamsValidate(t *testing.T) {
	tests := []struct {
		p    CreateParams
		want string
	}{
		{CreateParams{Name: "a", InstanceOfferingUUID: "o", ImageUUID: "i", L3NetworkUUIDs: []string{"l"}}, ""},
		{CreateParams{InstanceOfferingUUID: "o", ImageUUID: "i", L3NetworkUUIDs: []string{"l"}}, "name is required"},
		{CreateParams{Name: "a", ImageUUID: "i", L3NetworkUUIDs: []string{"l"}}, "instanceOfferingUuid is required"},
		{CreateParams{Name: "a", InstanceOfferingUUID: "o", ImageUUID: "i"}, "at least one L3"},
		{CreateParams{Name: "a", InstanceOfferingUUID: "o", ImageUUID: "i", L3NetworkUUIDs: []string{"l", "l"}}, "twice"},
		{CreateParams{Name: "a", InstanceOfferingUUID: "o", ImageUUID: "i", L3NetworkUUIDs: []string{"l"}, DefaultL3NetworkUUID: "m"}, "defaultL3NetworkUuid must be one of"},
	}
	for _, tc := range tests {
		err := tc.p.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.p, err)
			}
			continue
		}
		if err == nil || errcode.CodeOf(err) != errcode.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want SYS.1007 with %q", tc.p, err, tc.want)
		}
	}
}
