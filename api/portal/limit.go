package portal

import (
	"math"
	"sync"
	"time"

	"mplane/errcode"
)

// submitLimiter bounds how fast each normal account submits calls on this
// node: a token bucket per account (rate per second, burst of twice as
// many), so that one tenant cannot fill the queues every other tenant's
// calls wait in. Admin accounts are not limited. Buckets idle for a minute
// are forgotten.
type submitLimiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second; <= 0 is no limit
	burst   float64
	buckets map[string]*bucket
	swept   time.Time
	now     func() time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newSubmitLimiter(rate float64) *submitLimiter {
	return &submitLimiter{rate: rate, burst: math.Max(2*rate, 1), buckets: map[string]*bucket{}, now: time.Now}
}

// allow takes a token of account's bucket, or refuses with Busy (429),
// saying when to try again.
func (l *submitLimiter) allow(account string) (retryAfter time.Duration, err error) {
	if l == nil || l.rate <= 0 {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) > time.Minute {
		for k, b := range l.buckets {
			if now.Sub(b.at) > time.Minute {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[account]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[account] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, nil
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return wait, errcode.New(errcode.Busy, "this account submits calls faster than %g per second on this node; try again in %s", l.rate, wait.Round(time.Millisecond))
}
