package cloudbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/errcode"
)

// Fuzz targets of what decodes a delivery: the envelope (decodeEnvelope)
// and, on a memory-transport bus, the three consumers of raw deliveries
// (a service queue's dispatch, the reply queue's onReply and the event
// queue's onEvent). Their seeds run as unit tests in go test; `make fuzz`
// runs them for FUZZTIME each.

// envelopeSeeds returns wire envelopes, valid and not, for the seeds.
func envelopeSeeds(t testing.TB) [][]byte {
	enc := func(e *Envelope) []byte {
		b, err := encodeEnvelope(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := enc(&Envelope{ID: "n1-42", Name: fuzzMsg.Name(), Target: "fuzz.fuzz", ReplyTo: "reply.fuzz",
		Deadline: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), APIID: "api-1", ResourceUUID: "vm-1",
		Caller: &Identity{AccountUUID: "acc", SessionUUID: "s", Admin: true}, Hops: 2, From: "n1",
		Body: json.RawMessage(`{"text":"hello","n":3,"items":["a","b"],"nested":{"k":"v"}}`)})
	reply := enc(&Envelope{ID: "n1-43", Name: fuzzMsg.Name(), Target: "reply.n1", Reply: true, From: "n2",
		Error: errcode.Wrap(errcode.AgentError, errcode.New(errcode.Timeout, "agent"), "start vm"), Body: json.RawMessage(`null`)})
	seeds := [][]byte{
		full,
		reply,
		enc(&Envelope{ID: "e1", Name: "node.left", Body: json.RawMessage(`{"node":"n3"}`)}),
		enc(&Envelope{ID: "n1-44", Name: fuzzMsg.Name(), ReplyTo: "reply.fuzz", Body: json.RawMessage(`{"text":"fail"}`)}),
		enc(&Envelope{ID: "n1-45", Name: fuzzMsg.Name(), ReplyTo: "reply.fuzz", Body: json.RawMessage(`{"text":1}`)}),
		enc(&Envelope{ID: "n1-46", Name: fuzzMsg.Name(), ReplyTo: "reply.fuzz", Body: json.RawMessage(`{"text":"x"`)}),
		enc(&Envelope{ID: "n1-47", Name: fuzzMsg.Name(), ReplyTo: "reply.fuzz", Deadline: 1}),
		enc(&Envelope{ID: "n1-48", Name: "test.NoSuchMessage", ReplyTo: "reply.fuzz"}),
		enc(&Envelope{ID: "n1-49", Name: fuzzMsg.Name(), ReplyTo: "event.fuzz", Body: json.RawMessage(`{}`)}),
		enc(&Envelope{}),
		// Garbage.
		{},
		{wireVersion},
		{2, 0, 0, 0},
		{wireVersion, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		full[:len(full)/2],
		full[:20],
		// Varints: overlong, overflowing, a huge length, negative hops.
		{wireVersion, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
		append([]byte{wireVersion, 0, 0x80, 0x00, 0}, make([]byte, 9)...),
		{wireVersion, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		append(binary.AppendUvarint([]byte{wireVersion, 0, 0}, 1<<63+5), make([]byte, 9)...),
	}
	// Caller and error that are not JSON of their type, or deeply nested.
	for _, c := range []struct{ caller, errJSON string }{
		{`{"accountUuid":1}`, ``},
		{`null`, `null`},
		{`{"admin":true,"admin":false,"x":[1,2]}`, `{}`},
		{`{`, ``},
		{``, `{"code":"SYS.9999","description":"from a newer node"}`},
		{``, `{"code":"SYS.1001","cause":` + strings.Repeat(`{"code":"SYS.1000","cause":`, 50) + `null` + strings.Repeat(`}`, 51)},
		{``, `{"code":["x"]}`},
		{"\xff", "{\"details\":\"\xff\"}"},
	} {
		b := []byte{wireVersion, 0, 0, 0}
		for _, s := range []string{"id", fuzzMsg.Name(), "", "reply.fuzz", "", "", "", c.caller, c.errJSON} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		seeds = append(seeds, append(b, `{"text":"t"}`...))
	}
	return seeds
}

// FuzzDecodeEnvelope: decodeEnvelope never panics; when it fails it
// returns no envelope; an envelope it returns encodes again, and decoding
// that gives the same envelope (and encoding is then a fixed point).
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := decodeEnvelope(data)
		if err != nil {
			if env != nil {
				t.Fatalf("decodeEnvelope(%q) = %+v with error %v", data, env, err)
			}
			return
		}
		if env == nil {
			t.Fatalf("decodeEnvelope(%q) = nil, nil", data)
		}
		_ = env.DeadlineTime()
		if env.Error != nil {
			_ = env.Error.Error()
			_ = env.Error.Code.HTTPStatus()
		}
		again, err := encodeEnvelope(env)
		if err != nil {
			t.Fatalf("decoded envelope %+v does not encode: %v", env, err)
		}
		env2, err := decodeEnvelope(again)
		if err != nil {
			t.Fatalf("decoded envelope encoded again does not decode:\n data %q\nagain %q\n  err %v", data, again, err)
		}
		if !reflect.DeepEqual(env, env2) {
			t.Fatalf("round trip changed the envelope:\n data %q\nfirst %+v\nagain %q\nsecond %+v", data, env, again, env2)
		}
		third, err := encodeEnvelope(env2)
		if err != nil || !bytes.Equal(again, third) {
			t.Fatalf("encoding is not stable: %q then %q (%v)", again, third, err)
		}
	})
}

type fuzzReq struct {
	Text   string            `json:"text"`
	N      int               `json:"n"`
	Items  []string          `json:"items"`
	Nested map[string]string `json:"nested"`
}

type fuzzRep struct {
	Text string `json:"text"`
}

var fuzzMsg = NewMsg[fuzzReq, fuzzRep]("test.Fuzz")

// FuzzBusDelivery delivers fuzzed bytes to a started memory bus ("fuzz"
// node, serving service "fuzz" with a handler of test.Fuzz and a
// subscriber of every event) as a message, a reply and an event.
// Properties: nothing panics (a handler's panic is recovered by the bus, so
// the handler here never panics and the bus's panic counter must stay
// still); what does not decode reaches no handler, subscriber or waiting
// caller, and is counted malformed; what decodes is delivered exactly as
// decodeEnvelope returns it (the reply to the waiting caller of its id,
// the event to the subscriber, the message to the handler of its name
// unless it has expired or its body does not decode); a message for test.Fuzz with the bus's reply
// queue as reply-to and no close deadline is answered, with no error or
// InvalidArgument (the handler's) or MalformedMessage (a body that does
// not decode into the request type).
func FuzzBusDelivery(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add(s)
	}
	b, err := New(Options{URL: "memory://", NodeUUID: "fuzz", Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = b.Stop(context.Background()) })

	var mu sync.Mutex
	var handled, events []*Envelope
	mux := NewMux()
	Handle(mux, fuzzMsg, func(ctx context.Context, r fuzzReq) (fuzzRep, error) {
		mu.Lock()
		handled = append(handled, EnvelopeFrom(ctx))
		mu.Unlock()
		if r.Text == "fail" {
			return fuzzRep{}, errcode.New(errcode.InvalidArgument, "text must not be %q", r.Text)
		}
		return fuzzRep{Text: r.Text}, nil
	})
	if err := b.Serve("fuzz", mux); err != nil {
		f.Fatal(err)
	}
	if err := b.SubscribePattern("#", func(_ context.Context, env *Envelope) {
		mu.Lock()
		events = append(events, env)
		mu.Unlock()
	}); err != nil {
		f.Fatal(err)
	}
	reset := func() {
		mu.Lock()
		handled, events = nil, nil
		mu.Unlock()
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		reset()
		before := b.Stats()
		want, decErr := decodeEnvelope(data)

		// The reply queue.
		var p *pendingCall
		if decErr == nil {
			p = b.pending.add(want.ID, "fuzz.fuzz", want.Name)
		}
		b.onReply(data)
		if p != nil {
			select {
			case got := <-p.ch:
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("reply delivered as %+v, decoded %+v", got, want)
				}
			default:
				t.Fatalf("reply %+v not delivered to its caller", want)
			}
		}

		// The event queue.
		b.onEvent(data)
		b.handlers.Wait()
		mu.Lock()
		gotEvents := events
		mu.Unlock()
		if decErr != nil && len(gotEvents) != 0 || decErr == nil && (len(gotEvents) != 1 || !reflect.DeepEqual(gotEvents[0], want)) {
			t.Fatalf("event %q (decoded %+v, %v) delivered as %+v", data, want, decErr, gotEvents)
		}

		// A service queue. The handler runs if the body decodes into its
		// request type; MalformedMessage is answered if not.
		reset()
		bodyOK := decErr == nil && (len(want.Body) == 0 || json.Unmarshal(want.Body, new(fuzzReq)) == nil)
		answered := decErr == nil && want.Name == fuzzMsg.Name() && want.ReplyTo == b.reply &&
			(want.Deadline == 0 || want.DeadlineTime().After(time.Now().Add(time.Minute)))
		if answered {
			p = b.pending.add(want.ID, "fuzz.fuzz", want.Name)
		}
		b.dispatch(mux, data)
		b.handlers.Wait()
		if answered {
			select {
			case rep := <-p.ch:
				if !rep.Reply || rep.ID != want.ID {
					t.Fatalf("answer %+v to %+v", rep, want)
				}
				switch {
				case !bodyOK && (rep.Error == nil || rep.Error.Code != errcode.MalformedMessage),
					bodyOK && rep.Error != nil && rep.Error.Code != errcode.InvalidArgument:
					t.Fatalf("answer to %+v: %v", want, rep.Error)
				}
			default:
				t.Fatalf("message %+v not answered", want)
			}
		}
		if decErr == nil {
			b.pending.remove(want.ID)
		}
		mu.Lock()
		gotHandled := handled
		mu.Unlock()
		runs := bodyOK && want.Name == fuzzMsg.Name() &&
			(want.Deadline == 0 || want.DeadlineTime().After(time.Now().Add(time.Minute)))
		if decErr != nil && len(gotHandled) != 0 {
			t.Fatalf("message %q (%v) handled as %+v", data, decErr, gotHandled)
		}
		if runs && (len(gotHandled) == 0 || !reflect.DeepEqual(gotHandled[0], want)) {
			t.Fatalf("message %+v handled as %+v", want, gotHandled)
		}

		after := b.Stats()
		if decErr != nil && after.Malformed-before.Malformed != 3 {
			t.Fatalf("undecodable %q counted malformed %d times, want 3", data, after.Malformed-before.Malformed)
		}
		if after.Panics != before.Panics {
			t.Fatalf("delivering %q panicked in the bus", data)
		}
	})
}

// A hop count out of range on the wire is refused: as an int it could wrap
// negative and pass the forwarding bound.
func TestDecodeEnvelopeRefusesHopsOutOfRange(t *testing.T) {
	for _, hops := range []int{maxHops + 1, 1 << 62} {
		data, err := encodeEnvelope(&Envelope{Name: "x", Hops: hops})
		if err != nil {
			t.Fatal(err)
		}
		if e, err := decodeEnvelope(data); err == nil || e != nil {
			t.Errorf("hops %d: decoded %+v, %v; want an error", hops, e, err)
		}
	}
	data, err := encodeEnvelope(&Envelope{Name: "x", Hops: 3})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := decodeEnvelope(data); err != nil || e.Hops != 3 {
		t.Fatalf("hops 3: %+v, %v", e, err)
	}
}

// A caller or an error that is JSON null decodes to none, and an error
// without a code is refused: it would reach its caller as a codeless 500.
func TestDecodeEnvelopeNullCallerAndError(t *testing.T) {
	data, err := encodeEnvelope(&Envelope{Name: "x", Reply: true, Error: errcode.New(errcode.InvalidArgument, "bad")})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := decodeEnvelope(data); err != nil || e.Error == nil || e.Error.Code != errcode.InvalidArgument {
		t.Fatalf("an error envelope: %+v, %v", e, err)
	}
	build := func(caller, errJSON string) []byte {
		good, err := encodeEnvelope(&Envelope{Name: "x", Reply: true})
		if err != nil {
			t.Fatal(err)
		}
		// The last two length-prefixed fields of the header are the caller
		// and the error (both empty here): rewrite them.
		head := good[:len(good)-2]
		for _, f := range []string{caller, errJSON} {
			head = binary.AppendUvarint(head, uint64(len(f)))
			head = append(head, f...)
		}
		return head
	}
	if e, err := decodeEnvelope(build("null", "null")); err != nil || e.Caller != nil || e.Error != nil {
		t.Fatalf("null caller and error: %+v, %v; want neither", e, err)
	}
	if e, err := decodeEnvelope(build("", `{"details":"no code"}`)); err == nil {
		t.Fatalf("an error without a code decoded: %+v", e)
	}
}
