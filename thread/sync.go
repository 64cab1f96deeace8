package thread

import "context"

// Future is the pending result of a task submitted with Submit.
type Future[T any] struct {
	task // one allocation for the scheduler's record and the result
	fn   func(ctx context.Context) (T, error)
	done chan struct{}
	out  T // written by run, on the task's goroutine
	val  T // published by complete
	err  error
}

func (f *Future[T]) run(ctx context.Context) error {
	v, err := f.fn(ctx)
	f.out = v
	return err
}

func (f *Future[T]) complete(err error, ran bool) {
	// When the task was abandoned, its goroutine may still write f.out:
	// read it only when run has returned on this same goroutine.
	if ran {
		f.val = f.out
	}
	f.err = err
	close(f.done)
}

// Done is closed once the result is available.
func (f *Future[T]) Done() <-chan struct{} { return f.done }

// Wait returns the task's result once it is available, or ctx's error if
// ctx ends first (the task goes on regardless).
func (f *Future[T]) Wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Submit queues fn as task t of s and returns at once. fn is called with a
// context derived from ctx (its values, its cancellation) that also ends
// at the task's deadline; use context.WithoutCancel(ctx) for a task that
// must outlive its submitter's context. The error is non-nil, and fn is
// never called, when the task is not accepted (ErrStopped, ErrFenced,
// ErrQueueFull, ErrTimeout for a deadline already passed, ctx's error for
// a context already done, or an invalid Task).
func Submit[T any](ctx context.Context, s *Scheduler, t Task, fn func(ctx context.Context) (T, error)) (*Future[T], error) {
	f := &Future[T]{fn: fn, done: make(chan struct{})}
	f.job = f
	if err := s.submit(ctx, t, &f.task); err != nil {
		return nil, err
	}
	return f, nil
}

// Sync runs fn as task t of s and returns its result. It waits for the
// task to complete, which happens no later than Options.Grace after ctx
// ends or the task's deadline passes: a pending task is dropped at once, a
// running one is cancelled, and released by the watchdog if it does not
// return within the grace period.
func Sync[T any](ctx context.Context, s *Scheduler, t Task, fn func(ctx context.Context) (T, error)) (T, error) {
	f, err := Submit(ctx, s, t, fn)
	if err != nil {
		var zero T
		return zero, err
	}
	<-f.done
	return f.val, f.err
}

// Do is Sync for a function without a result.
func (s *Scheduler) Do(ctx context.Context, t Task, fn func(ctx context.Context) error) error {
	_, err := Sync(ctx, s, t, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, fn(ctx)
	})
	return err
}
