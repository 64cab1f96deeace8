package testenv

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	amqpEnv        = "MPLANE_TEST_AMQP_URL"
	defaultAMQPURL = "amqp://guest:guest@127.0.0.1:5672/"
	probeTimeout   = 3 * time.Second
)

var amqpProbe struct {
	once sync.Once
	url  string
	err  error
}

// AMQPURL returns the URL of the test RabbitMQ broker, after checking once
// per process that it accepts a connection. If it does not, the test is
// skipped, or failed under CI=true.
func AMQPURL(t testing.TB) string {
	t.Helper()
	amqpProbe.once.Do(func() {
		amqpProbe.url = envOr(amqpEnv, defaultAMQPURL)
		amqpProbe.err = probeAMQP(amqpProbe.url)
	})
	if amqpProbe.err != nil {
		unreachable(t, os.Getenv, "RabbitMQ not reachable at %s (%v); set %s or start rabbitmq-server",
			redactURL(amqpProbe.url), amqpProbe.err, amqpEnv)
	}
	return amqpProbe.url
}

func probeAMQP(url string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(probeTimeout)})
	if err != nil {
		return err
	}
	if err := conn.Close(); err != nil {
		return fmt.Errorf("close probe connection: %w", err)
	}
	return nil
}

func redactURL(s string) string {
	u, err := amqp.ParseURI(s)
	if err != nil || u.Password == "" {
		return s
	}
	u.Password = "xxxxx"
	return u.String()
}

// DeleteQueuesAtCleanup deletes the named queues from the broker at url
// when the test ends. Shared queues (such as "<prefix>.api.portal")
// outlive every node that consumes them, so the test that made them
// deletes them; a queue already gone is fine.
func DeleteQueuesAtCleanup(t testing.TB, url string, names ...string) {
	t.Helper()
	deleteAtCleanup(t, url, "queue", names, func(ch *amqp.Channel, name string) error {
		_, err := ch.QueueDelete(name, false, false, false)
		return err
	})
}

// BusPrefix is a fresh name prefix (Prefix) for buses on the broker at
// url, whose exchanges ("<prefix>.p2p", "<prefix>.event": cloudbus's)
// are deleted when the test ends. Register it before the buses start, so
// the deletion runs after they stopped.
func BusPrefix(t testing.TB, url string) string {
	t.Helper()
	p := Prefix(t)
	DeleteExchangesAtCleanup(t, url, p+".p2p", p+".event")
	return p
}

// DeleteExchangesAtCleanup deletes the named exchanges from the broker at
// url when the test ends; one already gone is fine.
func DeleteExchangesAtCleanup(t testing.TB, url string, names ...string) {
	t.Helper()
	deleteAtCleanup(t, url, "exchange", names, func(ch *amqp.Channel, name string) error {
		return ch.ExchangeDelete(name, false, false)
	})
}

// deleteAtCleanup runs del on each name, a channel each (a missing one
// closes the channel with 404: not an error here), when the test ends.
func deleteAtCleanup(t testing.TB, url, kind string, names []string, del func(ch *amqp.Channel, name string) error) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Errorf("delete %ss %v: %v", kind, names, err)
			return
		}
		defer conn.Close()
		for _, name := range names {
			ch, err := conn.Channel()
			if err != nil {
				t.Errorf("delete %s %s: %v", kind, name, err)
				return
			}
			if err := del(ch, name); err != nil {
				var ae *amqp.Error
				if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
					t.Errorf("delete %s %s: %v", kind, name, err)
				}
			}
			_ = ch.Close()
		}
	})
}
