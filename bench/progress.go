package bench

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress shows how a phase goes on stderr: on a terminal one line
// redrawn every second, else a line every five seconds; always a last
// line when the phase ends.
type progress struct {
	w         io.Writer
	tty       bool
	op        string
	total     int
	submitAll bool
	start     time.Time

	submitted, done, failed atomic.Int64

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startProgress(w io.Writer, tty bool, op string, total int, submitAll bool) *progress {
	p := &progress{w: w, tty: tty, op: op, total: total, submitAll: submitAll, start: time.Now(), stop: make(chan struct{})}
	if w == nil {
		return p
	}
	every := 5 * time.Second
	if tty {
		every = time.Second
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print(false)
			}
		}
	}()
	return p
}

func (p *progress) finished(err error) {
	p.done.Add(1)
	if err != nil {
		p.failed.Add(1)
	}
}

func (p *progress) line() string {
	el := time.Since(p.start)
	done := p.done.Load()
	rate := float64(done) / max(el.Seconds(), 1e-9)
	s := fmt.Sprintf("%s: %d/%d done, %d failed, %.1f/s, %s", p.op, done, p.total, p.failed.Load(), rate, el.Round(100*time.Millisecond))
	if p.submitAll {
		s = fmt.Sprintf("%s: %d/%d submitted, ", p.op, p.submitted.Load(), p.total) + s[len(p.op)+2:]
	}
	return s
}

func (p *progress) print(last bool) {
	switch {
	case p.tty && last:
		fmt.Fprintf(p.w, "\r\x1b[K%s\n", p.line())
	case p.tty:
		fmt.Fprintf(p.w, "\r\x1b[K%s", p.line())
	default:
		fmt.Fprintln(p.w, p.line())
	}
}

// end stops the ticker and prints the last line; idempotent.
func (p *progress) end() {
	p.stopOnce.Do(func() {
		close(p.stop)
		p.wg.Wait()
		if p.w != nil {
			p.print(true)
		}
	})
}
