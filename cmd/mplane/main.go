// Command mplane is the one binary of the mplane management plane.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		// ctl prints its own errors; everything else is printed here.
		var rep interface{ Reported() bool }
		if !errors.As(err, &rep) || !rep.Reported() {
			fmt.Fprintln(os.Stderr, "mplane:", err)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		// ctl's errors carry their code themselves.
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			os.Exit(coded.ExitCode())
		}
		os.Exit(1)
	}
}
