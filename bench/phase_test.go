package bench

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"mplane/api/client"
)

func TestMaxOutstanding(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	job := &client.Job{}
	recs := []opRecord{
		{job: job, accepted: at(0), done: at(10)},
		{job: job, accepted: at(5), done: at(20)},
		{job: job, accepted: at(10), done: at(30)}, // starts as the first ends: 2, not 3
		{job: job, accepted: at(12), done: at(13)},
		{accepted: at(1), done: at(1)}, // refused: never held
	}
	if got := maxOutstanding(recs); got != 3 {
		t.Errorf("maxOutstanding = %d, want 3 (at 12 ms)", got)
	}
	if got := maxOutstanding(nil); got != 0 {
		t.Errorf("maxOutstanding(nil) = %d", got)
	}
}

func TestJobFigures(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	job := &client.Job{}
	var recs []opRecord
	for i := range 10 { // 10 succeeded: call at i ms, 202 after 1 ms, done after 10+i ms
		recs = append(recs, opRecord{job: job, start: at(i), accepted: at(i + 1), done: at(10 + 2*i)})
	}
	for i := range 7 { // 7 refused at the call
		recs = append(recs, opRecord{start: at(i), accepted: at(i + 2), done: at(i + 2), err: fmt.Errorf("refused %d", i)})
	}
	recs = append(recs, opRecord{job: job, start: at(0), accepted: at(1), done: at(2000), err: errors.New("job failed late")})

	ph := jobFigures(OpStop, recs, t0)
	if ph.Op != OpStop || ph.Ops != 18 || ph.Succeeded != 10 || ph.Failed != 8 {
		t.Errorf("counts %+v", ph)
	}
	if len(ph.FirstErrors) != maxErrorsKept || ph.FirstErrors[0] != "refused 0" {
		t.Errorf("first errors %q", ph.FirstErrors)
	}
	// The phase lasts until the last result, failed or not: 2 s.
	if ph.Seconds != 2 || ph.OpsPerSecond != 5 {
		t.Errorf("seconds %v, ops/s %v; want 2 and 5", ph.Seconds, ph.OpsPerSecond)
	}
	if ph.SubmitSeconds != 0.01 {
		t.Errorf("submit seconds %v, want 0.01 (the last 202)", ph.SubmitSeconds)
	}
	// Latencies of the succeeded jobs only: 10+i ms for i in 0..9.
	if ph.Done.Count != 10 || ph.Done.P50 != 14 || ph.Done.Max != 19 {
		t.Errorf("done %+v", ph.Done)
	}
	// Accept latencies of every call that started a job (11), 1 ms each.
	if ph.Accept.Count != 11 || ph.Accept.Max != 1 {
		t.Errorf("accept %+v", ph.Accept)
	}
	if ph.MaxOutstanding != 10 {
		t.Errorf("max outstanding %d, want 10 (the late job and nine others)", ph.MaxOutstanding)
	}
	if empty := jobFigures(OpCreate, nil, t0); empty.Ops != 0 || empty.OpsPerSecond != 0 || empty.Done.Count != 0 {
		t.Errorf("no jobs: %+v", empty)
	}
}
