package e2e

import (
	"syscall"
	"testing"
	"time"
)

// TestFencedNodeExits freezes a node (SIGSTOP) past the heartbeat
// threshold: the survivor evicts it; thawed (SIGCONT), the node finds its
// row gone, stops serving and exits with code 3 and a clear log line.
func TestFencedNodeExits(t *testing.T) {
	e := newClusterEnv(t)
	a, b := e.startServer("A"), e.startServer("B")
	converged(t, 30*time.Second, a, b)
	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	converged(t, 60*time.Second, a)
	if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if code := b.exitCode(); code != 3 {
		t.Fatalf("fenced node exited with %d, want 3", code)
	}
	if !b.logged("fenced") {
		t.Fatal("fenced node did not say so in its log")
	}
	// The survivor keeps serving alone.
	if st := statusOf(t, a); st.Members != 1 || st.PartitionsOwned != 271 {
		t.Fatalf("survivor status %+v", st)
	}
}
