package bench

import (
	"slices"
	"time"
)

// jobFigures summarizes the jobs of a phase that started at start: counts,
// the first failures, throughput, latencies from the call to the 202 and to
// the result, and the most jobs held at once.
func jobFigures(op string, recs []opRecord, start time.Time) Phase {
	ph := Phase{Op: op, Ops: len(recs)}
	var accept, done []time.Duration
	end, submitted := start, start
	for i := range recs {
		rec := &recs[i]
		if rec.accepted.After(submitted) {
			submitted = rec.accepted
		}
		if !rec.accepted.IsZero() && rec.job != nil {
			accept = append(accept, rec.accepted.Sub(rec.start))
		}
		if rec.done.After(end) {
			end = rec.done
		}
		if rec.err != nil {
			ph.Failed++
			if len(ph.FirstErrors) < maxErrorsKept {
				ph.FirstErrors = append(ph.FirstErrors, rec.err.Error())
			}
			continue
		}
		ph.Succeeded++
		done = append(done, rec.done.Sub(rec.start))
	}
	ph.Seconds = round3(end.Sub(start).Seconds())
	ph.SubmitSeconds = round3(submitted.Sub(start).Seconds())
	if ph.Seconds > 0 {
		ph.OpsPerSecond = round2(float64(ph.Succeeded) / ph.Seconds)
	}
	ph.Accept, ph.Done = Summarize(accept), Summarize(done)
	ph.MaxOutstanding = maxOutstanding(recs)
	return ph
}

// maxOutstanding is the most jobs accepted (202) and not yet done at one
// moment.
func maxOutstanding(recs []opRecord) int {
	type event struct {
		at    time.Time
		delta int
	}
	var evs []event
	for _, r := range recs {
		if r.job == nil || r.done.IsZero() {
			continue // refused, or answered at once
		}
		evs = append(evs, event{r.accepted, 1}, event{r.done, -1})
	}
	// At one instant a job's end counts before another's start.
	slices.SortFunc(evs, func(a, b event) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta
	})
	n, most := 0, 0
	for _, e := range evs {
		n += e.delta
		most = max(most, n)
	}
	return most
}
