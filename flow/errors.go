package flow

import (
	"errors"
	"fmt"
	"strings"
)

// ErrPanic matches (errors.Is) the error of a step or rollback that
// panicked; see PanicError for the value and the stack.
var ErrPanic = errors.New("flow: step panicked")

// ErrUnknownChain: a record names a chain that is not in the Registry.
var ErrUnknownChain = errors.New("flow: unknown chain")

// StepError is the error a chain returns when a step fails, and the error of
// each rollback that fails. Error() is
//
//	flow "create-vm" step "start-on-host": <the step's error>
//
// so errcode.From keeps the step's code and prefixes its details with where
// it happened. Unwrap gives the step's error only: errors.Is/As and
// errcode.CodeOf see the failure, not the rollback errors.
type StepError struct {
	Chain string // chain name
	ID    string // run ID
	Step  string // step name; empty for a failure outside any step (recording completion)
	Index int    // step index, from 0; -1 with an empty Step
	// Rollback is set on the error of a failed rollback.
	Rollback bool
	Err      error
	// RollbackErrors holds the *StepError of each rollback that failed after
	// this failure, in the order they ran. Every rollback was attempted.
	RollbackErrors []error
}

func (e *StepError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "flow %q", e.Chain)
	if e.Step != "" {
		fmt.Fprintf(&b, " step %q", e.Step)
	}
	if e.Rollback {
		b.WriteString(" rollback")
	}
	if n := len(e.RollbackErrors); n > 0 {
		fmt.Fprintf(&b, " (%d rollback(s) failed too: ", n)
		for i, re := range e.RollbackErrors {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(describeRollback(re))
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// describeRollback is a rollback error without the repeated chain name.
func describeRollback(err error) string {
	var se *StepError
	if errors.As(err, &se) && se.Step != "" {
		return fmt.Sprintf("step %q: %v", se.Step, se.Err)
	}
	return err.Error()
}

func (e *StepError) Unwrap() error { return e.Err }

// PanicError is the error of a step or rollback that panicked. It matches
// ErrPanic, and the panic value when that is an error.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the stack of the panicking goroutine
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns ErrPanic and, when the panic value is an error, that error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}
