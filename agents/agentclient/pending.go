package agentclient

import (
	"errors"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"mplane/errcode"
)

// call is one async command waiting for its result.
type call struct {
	taskUUID string
	// token authenticates the call's result: a random value (newToken)
	// that only the callback URL sent with the command carries. Start
	// always sets one.
	token    string
	agentURL string
	path     string
	started  time.Time
	deadline time.Time
	// timer fails the call at its deadline; stopCtx unhooks the context
	// watcher. Both are set under Client.mu before the call can be taken.
	timer   *time.Timer
	stopCtx func() bool
	done    func(Result)
}

func (cl *call) finish(r Result) {
	cl.done(r)
}

type outcome uint8

const (
	outcomeResult outcome = iota + 1
	outcomeTimeout
	outcomeCanceled
	outcomeSendFailed
	outcomeShutdown
	outcomeAgentGone
)

// AgentGone fails at once every call pending on the agent at agentURL,
// which the caller found gone (its address refuses connections: the
// process died, and with it the commands it was running). Their results
// would never come; waiting would hold each caller to its deadline. The
// calls fail with AgentError saying the command may have run before the
// agent went: callers settle that from the host's state (a VM's) or by
// undoing it idempotently. It answers how many calls it failed.
func (c *Client) AgentGone(agentURL string, cause error) int {
	c.mu.Lock()
	var ids []string
	for id, cl := range c.pending {
		if cl.agentURL == agentURL {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	n := 0
	for _, id := range ids {
		cl := c.take(id, outcomeAgentGone)
		if cl == nil {
			continue
		}
		n++
		c.stats.agentGone.Add(1)
		cl.finish(Result{TaskUUID: id, Err: errcode.Wrap(errcode.AgentError, cause,
			"agent %s went away while it ran %s (task %s, for %v): its result will not come; the command may have run",
			cl.agentURL, cl.path, id, time.Since(cl.started).Round(time.Millisecond))})
	}
	return n
}

// Refused reports an error of a call whose agent's address refused the
// connection: nothing listens there (the agent is down).
func Refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// take removes the call from the pending table and reports it, or nil if
// it already finished. Whoever takes a call is the only one to finish it:
// that is what makes completion exactly-once among callback, timer,
// context and send failure.
func (c *Client) take(id string, why outcome) *call {
	return c.takeIf(id, nil, why)
}

// takeIf is take, but only of want when want is not nil: a callback
// authenticated for one call never completes another that took its task
// UUID meanwhile.
func (c *Client) takeIf(id string, want *call, why outcome) *call {
	c.mu.Lock()
	cl := c.pending[id]
	if cl != nil && want != nil && cl != want {
		cl = nil
	}
	if cl != nil {
		delete(c.pending, id)
		c.finished.add(id, finishedCall{agentURL: cl.agentURL, path: cl.path, outcome: why})
	}
	c.mu.Unlock()
	if cl == nil {
		return nil
	}
	cl.timer.Stop()
	cl.stopCtx()
	return cl
}

// lookup returns the pending call of task id, nil if there is none; the
// call stays pending.
func (c *Client) lookup(id string) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[id]
}

// finishedCall is what is remembered of a call after it ended.
type finishedCall struct {
	agentURL string
	path     string
	outcome  outcome
}

// tombstones remembers the last n finished calls (FIFO).
type tombstones struct {
	byID map[string]finishedCall
	ring []string
	next int
}

func newTombstones(n int) tombstones {
	return tombstones{byID: make(map[string]finishedCall, n), ring: make([]string, n)}
}

func (t *tombstones) add(id string, f finishedCall) {
	if old := t.ring[t.next]; old != "" {
		delete(t.byID, old)
	}
	t.ring[t.next] = id
	t.next = (t.next + 1) % len(t.ring)
	t.byID[id] = f
}

// PendingCall describes a call waiting for its result (admin endpoints).
type PendingCall struct {
	TaskUUID string    `json:"taskUuid"`
	AgentURL string    `json:"agentUrl"`
	Path     string    `json:"path"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
}

// Pending lists the calls waiting for their result, oldest first.
func (c *Client) Pending() []PendingCall {
	c.mu.Lock()
	out := make([]PendingCall, 0, len(c.pending))
	for _, cl := range c.pending {
		out = append(out, PendingCall{TaskUUID: cl.taskUUID, AgentURL: cl.agentURL, Path: cl.path,
			Started: cl.started, Deadline: cl.deadline})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// PendingCount is the number of calls waiting for their result.
func (c *Client) PendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

type counters struct {
	started, succeeded, failed, timedOut, canceled, sendFailed, shutdown atomic.Uint64
	syncCalls, syncFailed                                                atomic.Uint64
	badCallbacks, duplicateCallbacks, lateCallbacks, unknownCallbacks    atomic.Uint64
	rejectedCallbacks, oversizedCallbacks                                atomic.Uint64
	agentGone                                                            atomic.Uint64
}

// Stats are the client's counters since New.
type Stats struct {
	Pending int `json:"pending"`
	// Started counts async calls whose command was accepted for sending.
	Started uint64 `json:"started"`
	// Succeeded and Failed count results with success true and false.
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	TimedOut  uint64 `json:"timedOut"`
	Canceled  uint64 `json:"canceled"`
	// SendFailed counts async commands the agent did not accept (transport
	// error or non-200 answer); a send cut short by the deadline or the
	// caller counts under TimedOut or Canceled.
	SendFailed uint64 `json:"sendFailed"`
	Shutdown   uint64 `json:"shutdown"`
	// AgentGone counts calls failed by AgentGone: their agent went away
	// while it ran them.
	AgentGone  uint64 `json:"agentGone"`
	SyncCalls  uint64 `json:"syncCalls"`
	SyncFailed uint64 `json:"syncFailed"`
	// BadCallbacks counts callbacks without a taskuuid (answered 400).
	BadCallbacks uint64 `json:"badCallbacks"`
	// RejectedCallbacks counts callbacks for a pending task without the
	// call's token or with a wrong one (answered 403, body unread, the
	// call left pending): forged, or posted to another URL than the one
	// the command gave.
	RejectedCallbacks uint64 `json:"rejectedCallbacks"`
	// OversizedCallbacks counts results larger than MaxResultBytes
	// (answered 413); the call fails (counted in Failed too).
	OversizedCallbacks uint64 `json:"oversizedCallbacks"`
	// DuplicateCallbacks, LateCallbacks and UnknownCallbacks count callbacks
	// answered 404: for a call that already had its result, for one that
	// had timed out or been cancelled (the agent may have done the work),
	// and for a task UUID never seen or long forgotten (possibly forged).
	DuplicateCallbacks uint64 `json:"duplicateCallbacks"`
	LateCallbacks      uint64 `json:"lateCallbacks"`
	UnknownCallbacks   uint64 `json:"unknownCallbacks"`
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Pending:            c.PendingCount(),
		Started:            s.started.Load(),
		Succeeded:          s.succeeded.Load(),
		Failed:             s.failed.Load(),
		TimedOut:           s.timedOut.Load(),
		Canceled:           s.canceled.Load(),
		SendFailed:         s.sendFailed.Load(),
		Shutdown:           s.shutdown.Load(),
		AgentGone:          s.agentGone.Load(),
		SyncCalls:          s.syncCalls.Load(),
		SyncFailed:         s.syncFailed.Load(),
		BadCallbacks:       s.badCallbacks.Load(),
		RejectedCallbacks:  s.rejectedCallbacks.Load(),
		OversizedCallbacks: s.oversizedCallbacks.Load(),
		DuplicateCallbacks: s.duplicateCallbacks.Load(),
		LateCallbacks:      s.lateCallbacks.Load(),
		UnknownCallbacks:   s.unknownCallbacks.Load(),
	}
}
