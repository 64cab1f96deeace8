package server

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// The API listener's limits (docs/security.md). A request's headers must
// arrive within apiReadHeaderTimeout and its whole body within
// apiReadTimeout (bodies are at most 1 MiB); its answer must be written
// within apiWriteTimeout (the longest is a CPU profile of /debug/pprof,
// admin only; ask for one longer than that on the admin listener, which
// has no write timeout); an idle keep-alive connection is closed after
// apiIdleTimeout; at most apiMaxConnections are open at once (more wait to
// be accepted); request headers are at most apiMaxHeaderBytes.
const (
	apiReadHeaderTimeout = 10 * time.Second
	apiReadTimeout       = time.Minute
	apiWriteTimeout      = 2 * time.Minute
	apiIdleTimeout       = 2 * time.Minute
	apiMaxConnections    = 4096
	apiMaxHeaderBytes    = 64 << 10
)

// apiServer is the http.Server of the API listener, with its limits.
func apiServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: apiReadHeaderTimeout, ReadTimeout: apiReadTimeout,
		WriteTimeout: apiWriteTimeout, IdleTimeout: apiIdleTimeout, MaxHeaderBytes: apiMaxHeaderBytes}
}

// adminServer is the http.Server of the admin listener: the same header
// and idle limits, no read or write deadline (a long profile, a slow
// operator's terminal).
func adminServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: apiReadHeaderTimeout, IdleTimeout: apiIdleTimeout, MaxHeaderBytes: apiMaxHeaderBytes}
}

// limitListener accepts at most n connections at once: Accept waits for
// one to close. A listener's Close wakes a waiting Accept.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
