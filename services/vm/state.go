package vm

import (
	"sort"
	"strings"

	"mplane/errcode"
)

// Operations and the states they may start from. Anything else is refused
// with InvalidState before any work is done.
var allowedFrom = map[string][]string{
	"start":   {StateStopped},
	"stop":    {StateRunning},
	"reboot":  {StateRunning},
	"destroy": {StateCreated, StateRunning, StateStopped, StateUnknown, StateError},
	"expunge": {StateDestroyed, StateExpunging},
}

// transitional is the state an operation shows while it runs.
var transitional = map[string]string{
	"start": StateStarting, "stop": StateStopping, "reboot": StateRebooting,
	"destroy": StateDestroying, "expunge": StateExpunging,
}

// checkTransition refuses op on a VM in state from, saying what would be
// needed.
func checkTransition(vmUUID, op, from string) error {
	allowed := allowedFrom[op]
	for _, s := range allowed {
		if s == from {
			return nil
		}
	}
	want := append([]string(nil), allowed...)
	sort.Strings(want)
	return errcode.New(errcode.InvalidState, "cannot %s VM %s: it is %s; %s needs the VM to be %s",
		op, vmUUID, from, op, strings.Join(want, " or "))
}
