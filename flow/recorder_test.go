package flow

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

var backends = testenv.Backends

// openDB opens dsn as one "process" would, with flow_records migrated.
func openDB(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := db.Close(gdb); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	return gdb
}

func TestGormRecorder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			r := NewGormRecorder(openDB(t, b.DSN(t)))

			rec := Record{ID: "r1", Chain: "create-vm", Owner: "n1", Resource: "vm1", State: Running,
				Applied: 1, Total: 3, Step: "a", Data: []byte(`{"made":["a"]}`)}
			if err := r.Save(ctx, rec); err != nil {
				t.Fatalf("insert: %v", err)
			}
			// An update that changes nothing must still count as saved.
			if err := r.Save(ctx, rec); err != nil {
				t.Fatalf("identical update: %v", err)
			}
			rec.Applied, rec.Step, rec.Data = 2, "b", []byte(`{"made":["a","b"]}`)
			if err := r.Save(ctx, rec); err != nil {
				t.Fatalf("update: %v", err)
			}
			got, err := r.Get(ctx, "r1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Applied != 2 || got.Step != "b" || string(got.Data) != `{"made":["a","b"]}` ||
				got.Owner != "n1" || got.Resource != "vm1" || got.State != Running || got.Total != 3 || got.UpdatedAt.IsZero() {
				t.Fatalf("read back %+v", got)
			}
			if _, err := r.Get(ctx, "nope"); !errcode.Has(err, errcode.ResourceNotFound) {
				t.Errorf("Get(missing) = %v, want ResourceNotFound", err)
			}

			// Another owner cannot write the record.
			stale := rec
			stale.Owner, stale.Applied = "n2", 3
			if err := r.Save(ctx, stale); !errors.Is(err, ErrNotOwner) {
				t.Fatalf("save by another owner: %v, want ErrNotOwner", err)
			}

			if err := r.Save(ctx, Record{ID: "r2", Chain: "c", Owner: "n2", State: RollingBack}); err != nil {
				t.Fatal(err)
			}
			if err := r.Save(ctx, Record{ID: "r3", Chain: "c", Owner: "n1", State: Done}); err != nil {
				t.Fatal(err)
			}
			un, err := r.Unfinished(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ids := recordIDs(un); len(ids) != 2 || !ids["r1"] || !ids["r2"] {
				t.Errorf("Unfinished() = %v, want r1 and r2", ids)
			}
			un, err = r.Unfinished(ctx, "n2")
			if err != nil {
				t.Fatal(err)
			}
			if ids := recordIDs(un); len(ids) != 1 || !ids["r2"] {
				t.Errorf("Unfinished(n2) = %v, want r2", ids)
			}

			// Claim: only from the current owner, only unfinished records.
			if _, ok, err := r.Claim(ctx, "r1", "n9", "n3"); err != nil || ok {
				t.Errorf("claim from a non-owner: ok %v err %v", ok, err)
			}
			if _, ok, err := r.Claim(ctx, "r3", "n1", "n3"); err != nil || ok {
				t.Errorf("claim of a finished record: ok %v err %v", ok, err)
			}
			claimed, ok, err := r.Claim(ctx, "r1", "n1", "n3")
			if err != nil || !ok || claimed.Owner != "n3" || claimed.Applied != 2 {
				t.Fatalf("claim: %+v ok %v err %v", claimed, ok, err)
			}
			if err := r.Save(ctx, rec); !errors.Is(err, ErrNotOwner) {
				t.Errorf("old owner saved after the claim: %v, want ErrNotOwner", err)
			}

			// Prune deletes cleanly finished records only.
			if err := r.Save(ctx, Record{ID: "r4", Chain: "c", Owner: "n1", State: Failed}); err != nil {
				t.Fatal(err)
			}
			n, err := r.Prune(ctx, time.Now().Add(time.Hour))
			if err != nil || n != 1 {
				t.Fatalf("Prune = %d, %v; want 1 (r3)", n, err)
			}
			for id, want := range map[string]bool{"r1": true, "r2": true, "r3": false, "r4": true} {
				_, err := r.Get(ctx, id)
				if (err == nil) != want {
					t.Errorf("after prune, Get(%s) err %v, want present=%v", id, err, want)
				}
			}
		})
	}
}

func recordIDs(recs []Record) map[string]bool {
	m := make(map[string]bool)
	for _, r := range recs {
		m[r.ID] = true
	}
	return m
}

func TestClaimHasOneWinner(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.DSN(t)
			if err := NewGormRecorder(openDB(t, dsn)).Save(ctx, Record{ID: "r1", Chain: "c", Owner: "dead", State: Running}); err != nil {
				t.Fatal(err)
			}
			const nodes = 4
			recorders := make([]*GormRecorder, nodes)
			for i := range recorders {
				recorders[i] = NewGormRecorder(openDB(t, dsn))
			}
			var wg sync.WaitGroup
			wins := make([]bool, nodes)
			errs := make([]error, nodes)
			for i, r := range recorders {
				wg.Go(func() {
					_, wins[i], errs[i] = r.Claim(ctx, "r1", "dead", string(rune('a'+i)))
				})
			}
			wg.Wait()
			n := 0
			for i := range wins {
				if errs[i] != nil {
					t.Fatalf("node %d: %v", i, errs[i])
				}
				if wins[i] {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d claims won, want exactly 1", n)
			}
		})
	}
}

// crashingRecorder stops its goroutine, as if the process died, when it is
// asked to save a record for which crash is true: that save never happens.
type crashingRecorder struct {
	Recorder
	crash func(Record) bool
}

func (c crashingRecorder) Save(ctx context.Context, rec Record) error {
	if c.crash(rec) {
		runtime.Goexit()
	}
	return c.Recorder.Save(ctx, rec)
}

// crashPoint makes the first process die at one point of its run.
type crashPoint struct {
	onSave func(Record) bool    // die instead of this save
	bs     map[string]behaviour // or die inside a step (Goexit in a behaviour)
}

func TestRollbackAbandonedAfterCrash(t *testing.T) {
	exit := func(context.Context, *testData) { runtime.Goexit() }
	tests := []struct {
		name        string
		crash       crashPoint
		wantBefore  []string // events of the dead owner
		wantRecord  string   // "state/applied/step" left behind
		wantAfter   []string // events added by the new owner
		wantApplied int
	}{
		{
			// Step s2 completed; the process died before recording that s3
			// started, so s3 never ran. s2's outputs reach the record only
			// with s3's start: its rollback sees the data as it was before
			// s2 (rollbacks find what they made by keys known beforehand).
			name:       "died after step 2",
			crash:      crashPoint{onSave: func(r Record) bool { return r.State == Running && r.Step == "s3" }},
			wantBefore: []string{"run:s1", "run:s2"},
			wantRecord: "running/2/s2",
			wantAfter:  []string{"rollback:s2 made=s1", "rollback:s1 made=s1"},
		},
		{
			// s3 was in flight: its effects are unknown, so it is rolled
			// back too, with the data as it was before it.
			name:       "died inside step 3",
			crash:      crashPoint{bs: map[string]behaviour{"s3": {run: exit}}},
			wantBefore: []string{"run:s1", "run:s2", "run:s3"},
			wantRecord: "running/3/s3",
			wantAfter:  []string{"rollback:s3 made=s1,s2", "rollback:s2 made=s1,s2", "rollback:s1 made=s1,s2"},
		},
		{
			// s4 failed; the dead owner rolled back s4 and s3, and died
			// rolling back s2: the new owner redoes s2, then s1.
			name: "died while rolling back",
			crash: crashPoint{bs: map[string]behaviour{
				"s4": {runErr: errors.New("host rejected the vm")},
				"s2": {rollback: exit},
			}},
			wantBefore: []string{"run:s1", "run:s2", "run:s3", "run:s4",
				"rollback:s4 made=s1,s2,s3", "rollback:s3 made=s1,s2,s3", "rollback:s2 made=s1,s2,s3"},
			wantRecord: "rolling-back/2/s3",
			wantAfter:  []string{"rollback:s2 made=s1,s2,s3", "rollback:s1 made=s1,s2,s3"},
		},
	}
	names := []string{"s1", "s2", "s3", "s4"}
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					ctx := context.Background()
					dsn := b.DSN(t)
					world := &trace{}

					// Process 1, node "n1", dies mid-run.
					rec1 := NewGormRecorder(openDB(t, dsn))
					var recorder Recorder = rec1
					if tc.crash.onSave != nil {
						recorder = crashingRecorder{Recorder: rec1, crash: tc.crash.onSave}
					}
					c1 := mustChain(t, "create-vm", makeSteps(world, names, tc.crash.bs), Options{Recorder: recorder, Node: "n1"})
					done := make(chan struct{})
					returned := false
					go func() {
						defer close(done)
						_ = c1.Run(ctx, &testData{}, RunOptions{ID: "run-1", Resource: "vm-1"})
						returned = true
					}()
					<-done
					if returned {
						t.Fatal("the first run returned: the simulated crash did not happen")
					}
					world.want(t, tc.wantBefore...)

					// Process 2, node "n2", on its own connection pool, takes over.
					rec2 := NewGormRecorder(openDB(t, dsn))
					c2 := mustChain(t, "create-vm", makeSteps(world, names, nil), Options{Recorder: rec2, Node: "n2"})
					reg, err := NewRegistry(c2)
					if err != nil {
						t.Fatal(err)
					}
					left, err := rec2.Unfinished(ctx, "n1")
					if err != nil {
						t.Fatal(err)
					}
					if len(left) != 1 || summary(left)[0] != tc.wantRecord || left[0].Resource != "vm-1" {
						t.Fatalf("unfinished records of n1: %q, want [%s]", summary(left), tc.wantRecord)
					}
					// Unclaimed, the record is not n2's: nothing may be undone.
					if err := reg.RollbackAbandoned(ctx, left[0]); !errors.Is(err, ErrNotOwner) {
						t.Fatalf("RollbackAbandoned of an unclaimed record: %v, want ErrNotOwner", err)
					}
					world.want(t, tc.wantBefore...)

					claimed, ok, err := rec2.Claim(ctx, "run-1", "n1", "n2")
					if err != nil || !ok {
						t.Fatalf("claim: ok %v err %v", ok, err)
					}
					if err := reg.RollbackAbandoned(ctx, claimed); err != nil {
						t.Fatalf("RollbackAbandoned: %v", err)
					}
					world.want(t, append(slicesClone(tc.wantBefore), tc.wantAfter...)...)

					final, err := rec2.Get(ctx, "run-1")
					if err != nil {
						t.Fatal(err)
					}
					if final.State != RolledBack || final.Applied != 0 || final.Owner != "n2" {
						t.Errorf("final record %+v, want rolled-back by n2", final)
					}
					// A second attempt (e.g. an at-least-once redelivery) undoes nothing.
					if err := reg.RollbackAbandoned(ctx, final); err != nil {
						t.Fatalf("second RollbackAbandoned: %v", err)
					}
					world.want(t, append(slicesClone(tc.wantBefore), tc.wantAfter...)...)
					if left, _ := rec2.Unfinished(ctx); len(left) != 0 {
						t.Errorf("still unfinished: %q", summary(left))
					}
					// The dead owner, were it to come back, cannot overwrite.
					if err := rec1.Save(ctx, Record{ID: "run-1", Chain: "create-vm", Owner: "n1", State: Running}); !errors.Is(err, ErrNotOwner) {
						t.Errorf("old owner's save: %v, want ErrNotOwner", err)
					}
				})
			}
		})
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

func TestRollbackAbandonedErrors(t *testing.T) {
	ctx := context.Background()
	world := &trace{}
	rec := &memRecorder{}
	c := mustChain(t, "create-vm", makeSteps(world, []string{"s1", "s2"}, map[string]behaviour{
		"s1": {rollbackErr: errors.New("host gone")},
	}), Options{Recorder: rec, Node: "n2"})
	reg, err := NewRegistry(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRegistry(c, c); err == nil {
		t.Error("NewRegistry accepted one name twice")
	}
	tests := []struct {
		name    string
		rec     Record
		check   func(error) bool
		wantEvs []string
	}{
		{"unknown chain", Record{ID: "x", Chain: "other", State: Running},
			func(err error) bool { return errors.Is(err, ErrUnknownChain) }, nil},
		{"applied beyond the chain", Record{ID: "x", Chain: "create-vm", State: Running, Applied: 3},
			func(err error) bool { return err != nil }, nil},
		{"undecodable data", Record{ID: "x", Chain: "create-vm", State: Running, Applied: 1, Data: []byte(`{"made":7}`)},
			func(err error) bool { return err != nil }, nil},
		{"finished record", Record{ID: "x", Chain: "create-vm", State: Done, Applied: 2},
			func(err error) bool { return err == nil }, nil},
		{"failed rollback is reported", Record{ID: "x", Chain: "create-vm", Owner: "n2", State: Running, Applied: 2, Data: []byte(`{"made":["s1","s2"]}`)},
			func(err error) bool {
				var se *StepError
				return errors.As(err, &se) && se.Step == "s1" && se.Rollback
			},
			[]string{"rollback:s2 made=s1,s2", "rollback:s1 made=s1,s2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			world.events = nil
			err := reg.RollbackAbandoned(ctx, tc.rec)
			if !tc.check(err) {
				t.Fatalf("RollbackAbandoned error %v", err)
			}
			world.want(t, tc.wantEvs...)
		})
	}
	if last := rec.all(); len(last) == 0 || last[len(last)-1].State != Failed {
		t.Errorf("last record %q, want failed", summary(last))
	}
}

// A run saved under WithJob is found by its job, and keeps it through the
// updates that follow.
func TestRecordsKeepTheirJob(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			r := NewGormRecorder(openDB(t, b.DSN(t)))
			ctx := WithJob(context.Background(), "job-1")
			rec := Record{ID: "run-1", Chain: "c", Owner: "n", Resource: "r", State: Running, Total: 2}
			if err := r.Save(ctx, rec); err != nil {
				t.Fatal(err)
			}
			rec.State, rec.Applied = Done, 2
			if err := r.Save(context.Background(), rec); err != nil {
				t.Fatal(err)
			}
			if err := r.Save(context.Background(), Record{ID: "run-2", Chain: "c", Owner: "n", Resource: "r", State: Running, Total: 1}); err != nil {
				t.Fatal(err)
			}
			got, err := r.ForJob(context.Background(), "job-1")
			if err != nil || len(got) != 1 || got[0].ID != "run-1" || got[0].State != string(Done) {
				t.Fatalf("ForJob: %+v, %v; want run-1, Done", got, err)
			}
		})
	}
}
