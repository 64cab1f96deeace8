package db

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/internal/testenv"
)

// proxy forwards TCP connections to target until stopped; stop closes the
// listener and every connection, as a database that went away does.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) stop() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// A database that goes away mid-use answers DBUnavailable (retryable, 503),
// not an internal error; a statement's own error stays what it was.
func TestUnavailableDatabaseIsDBUnavailable(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	addr := regexp.MustCompile(`tcp\(([^)]+)\)`).FindStringSubmatch(dsn)
	if addr == nil {
		t.Fatalf("no tcp address in %q", dsn)
	}
	p := startProxy(t, addr[1])
	gdb := open(t, regexp.MustCompile(`tcp\([^)]+\)`).ReplaceAllString(dsn, "tcp("+p.ln.Addr().String()+")"), Options{})
	if err := gdb.AutoMigrate(&testNode{}); err != nil {
		t.Fatal(err)
	}
	if err := gdb.Create(&testNode{Name: "a"}).Error; err != nil {
		t.Fatal(err)
	}
	// A statement's own failure is not unavailability.
	err := gdb.Create(&testNode{Name: "a"}).Error
	if !errors.Is(err, gorm.ErrDuplicatedKey) || errcode.Has(err, errcode.DBUnavailable) {
		t.Fatalf("duplicate insert: %v, want ErrDuplicatedKey only", err)
	}
	var n testNode
	if err := gdb.Where("name = ?", "nobody").Take(&n).Error; !errors.Is(err, gorm.ErrRecordNotFound) || errcode.Has(err, errcode.DBUnavailable) {
		t.Fatalf("missing row: %v, want ErrRecordNotFound only", err)
	}

	p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, op := range map[string]func() error{
		"query":  func() error { return gdb.WithContext(ctx).Where("name = ?", "a").Take(&n).Error },
		"insert": func() error { return gdb.WithContext(ctx).Create(&testNode{Name: "b"}).Error },
		"update": func() error {
			return gdb.WithContext(ctx).Model(&testNode{}).Where("name = ?", "a").Update("name", "c").Error
		},
		"raw": func() error { return gdb.WithContext(ctx).Exec("SELECT 1").Error },
	} {
		err := op()
		e := errcode.From(err)
		if e.Code != errcode.DBUnavailable || !e.Retryable || e.Code.HTTPStatus() != 503 {
			t.Errorf("%s with the database gone: %v (code %s, retryable %v), want DBUnavailable, retryable, 503", name, err, e.Code, e.Retryable)
		}
		// What a handler adds on top keeps the code.
		if w := errcode.Wrap(errcode.Internal, err, "load host"); w.Code != errcode.DBUnavailable {
			t.Errorf("%s: Wrap(Internal) of it is %s, want DBUnavailable", name, w.Code)
		}
	}
}

func TestUnavailableClassifies(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{gorm.ErrRecordNotFound, false},
		{gorm.ErrDuplicatedKey, false},
		{errors.New("database is locked"), true},
		{&net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, true},
		{io.ErrUnexpectedEOF, true},
		{errors.New("syntax error near FROM"), false},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("Unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
