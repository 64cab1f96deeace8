package auth

import (
	"sync"
	"time"
)

// sessionCache remembers validated sessions for a short time. An entry is
// used only while both its cache lifetime and the session itself are
// unexpired, by the service's clock.
type sessionCache struct {
	ttl  time.Duration
	size int

	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	id      Identity
	expires time.Time // the earlier of the cache lifetime and the session's expiry
}

func newSessionCache(ttl time.Duration, size int) *sessionCache {
	return &sessionCache{ttl: ttl, size: size, entries: make(map[string]cacheEntry)}
}

func (c *sessionCache) get(key string, now time.Time) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return Identity{}, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return Identity{}, false
	}
	return e.id, true
}

func (c *sessionCache) put(key string, id Identity, sessionExpires, now time.Time) {
	expires := now.Add(c.ttl)
	if sessionExpires.Before(expires) {
		expires = sessionExpires
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		c.evictLocked(now)
	}
	c.entries[key] = cacheEntry{id: id, expires: expires}
}

// evictLocked drops the expired entries, and if that frees nothing, an
// arbitrary one: a full cache costs a database read, never memory.
func (c *sessionCache) evictLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < c.size {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

func (c *sessionCache) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}

func (c *sessionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// removeAccount drops the entries of an account's sessions (its password
// changed, or it was deleted).
func (c *sessionCache) removeAccount(account string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.id.AccountUUID == account {
			delete(c.entries, k)
		}
	}
}
