package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"mplane/api/client"
)

// progress shows how a job is doing on stderr, so that stdout keeps only
// the result (a table or JSON for a pipe). On a terminal it is one spinner
// line redrawn in place with the elapsed time and the job's state; else it
// is plain lines, one when the job is submitted and one per state change.
type progress struct {
	w     io.Writer
	tty   bool
	what  string
	job   string
	start time.Time

	mu    sync.Mutex
	state string
	last  string // last state printed (plain mode)

	stop chan struct{}
	wg   sync.WaitGroup
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

const spinnerInterval = 100 * time.Millisecond

func startProgress(w io.Writer, tty bool, what string, job *client.Job) *progress {
	p := &progress{w: w, tty: tty, what: what, job: job.UUID, start: job.Started, state: "submitted", stop: make(chan struct{})}
	if !tty {
		fmt.Fprintf(w, "%s: job %s submitted\n", what, job.UUID)
		p.last = p.state
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(spinnerInterval)
		defer t.Stop()
		for frame := 0; ; frame++ {
			p.draw(spinnerFrames[frame%len(spinnerFrames)])
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *progress) draw(frame string) {
	p.mu.Lock()
	state := p.state
	p.mu.Unlock()
	fmt.Fprintf(p.w, "\r\x1b[K%s %s: %s (%s)", frame, p.what, state, elapsed(time.Since(p.start)))
}

// update is the progress function given to Job.Wait.
func (p *progress) update(d time.Duration, state string) {
	p.mu.Lock()
	p.state = state
	changed := !p.tty && state != p.last
	if changed {
		p.last = state
	}
	p.mu.Unlock()
	if changed && state != client.JobSucceeded && state != client.JobFailed {
		fmt.Fprintf(p.w, "%s: %s (%s)\n", p.what, state, elapsed(d))
	}
}

// finish ends the display with one line saying how the job ended.
func (p *progress) finish(err error) {
	if p.tty {
		close(p.stop)
		p.wg.Wait()
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	d := elapsed(time.Since(p.start))
	switch {
	case err == nil:
		fmt.Fprintf(p.w, "%s: done in %s\n", p.what, d)
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(p.w, "%s: stopped waiting after %s (job %s)\n", p.what, d, p.job)
	default:
		fmt.Fprintf(p.w, "%s: failed after %s (job %s)\n", p.what, d, p.job)
	}
}

func elapsed(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// finishJob waits for a job unless noWait, then prints the resulting
// inventory as noun's table or JSON; a result without inventory prints
// doneMsg (table output only).
func (r *invocation) finishJob(job *client.Job, what string, n *noun, noWait bool, doneMsg string) error {
	if noWait {
		if r.json {
			return printJSON(r.out, map[string]string{"jobUuid": job.UUID, "location": job.Location})
		}
		fmt.Fprintln(r.out, job.Location)
		return nil
	}
	inv, err := r.waitJob(job, what)
	if err != nil {
		return err
	}
	return r.printResult(n, inv, doneMsg)
}

// waitJob waits for a job with the progress on stderr and returns its
// inventory (nil for a result without one).
func (r *invocation) waitJob(job *client.Job, what string) (json.RawMessage, error) {
	ctx, stop := signal.NotifyContext(r.ctx(), os.Interrupt)
	defer stop()
	p := startProgress(r.errOut, IsTerminal(r.errOut), what, job)
	inv, err := job.Wait(ctx, p.update)
	p.finish(err)
	if err != nil {
		if ctx.Err() != nil && r.ctx().Err() == nil {
			return nil, fmt.Errorf("interrupted; the job goes on on the server: wait for it with `mplane ctl wait %s`", job.UUID)
		}
		return nil, err
	}
	return inv, nil
}

// printResult prints a job's inventory as n's table or JSON; a result
// without inventory prints doneMsg (table output only).
func (r *invocation) printResult(n *noun, inv json.RawMessage, doneMsg string) error {
	if inv == nil {
		if doneMsg != "" && !r.json {
			fmt.Fprintln(r.out, doneMsg)
		}
		return nil
	}
	return r.renderOne(n, inv)
}

func newWaitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "wait <job-location|job-uuid>",
		Short: "Wait for a job started with --no-wait and print its result",
		Example: "  loc=$(mplane ctl create zone --name z1 --no-wait)\n" +
			"  mplane ctl wait \"$loc\"",
		Args: argsUUID("job location or UUID"),
		RunE: runE(g, func(r *invocation, args []string) error {
			job, err := r.c.Job(args[0])
			if err != nil {
				return err
			}
			return r.finishJob(job, "job "+job.UUID, jobNoun, false, "Job "+job.UUID+" succeeded")
		}),
	}
}
