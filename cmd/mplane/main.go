// Command mplane is the one binary of the mplane management plane.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mplane:", err)
		os.Exit(1)
	}
}
