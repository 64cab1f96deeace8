package cloudbus

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"mplane/errcode"
)

// Envelope is what travels on the wire, identically on every transport.
type Envelope struct {
	// ID identifies the message; a reply carries the ID of its request.
	ID string `json:"id"`
	// Name is the registered message or event name.
	Name string `json:"name,omitempty"`
	// Target is the queue the message was sent to ("vm.<node>", "api.portal").
	Target string `json:"target,omitempty"`
	// ReplyTo is the caller's reply queue; empty for Send and events.
	ReplyTo string `json:"replyTo,omitempty"`
	// Deadline is absolute, in Unix nanoseconds; 0 means none (events).
	Deadline int64 `json:"deadline,omitempty"`
	// APIID and ResourceUUID trace a message back to the API call and the
	// resource it is about.
	APIID        string `json:"apiId,omitempty"`
	ResourceUUID string `json:"resourceUuid,omitempty"`
	// Caller is the identity the work is done for.
	Caller *Identity `json:"caller,omitempty"`
	// Hops counts forwards between nodes (managementnode bounds it).
	Hops int `json:"hops,omitempty"`
	// From is the sending node.
	From string `json:"from,omitempty"`

	// Reply marks a reply; Error is set on a failed reply.
	Reply bool           `json:"reply,omitempty"`
	Error *errcode.Error `json:"error,omitempty"`

	Body json.RawMessage `json:"body,omitempty"`
}

// Identity is the account and session a message acts for.
type Identity struct {
	AccountUUID string `json:"accountUuid,omitempty"`
	SessionUUID string `json:"sessionUuid,omitempty"`
	Admin       bool   `json:"admin,omitempty"`
}

// DeadlineTime is the envelope's deadline as a time (zero if none).
func (e *Envelope) DeadlineTime() time.Time {
	if e.Deadline == 0 {
		return time.Time{}
	}
	return time.Unix(0, e.Deadline)
}

// The wire form is a compact binary header followed by the JSON body:
//
//	version byte, flags byte, deadline varint, hops uvarint,
//	then id, name, target, replyTo, apiId, resourceUuid, from, caller, error
//	as uvarint-length-prefixed strings (caller and error as JSON, or empty),
//	then the body to the end.
//
// Both transports use it, so nothing works in memory that would not on
// RabbitMQ. A header instead of one JSON document spares decoding the body
// twice (once as a raw message, once into its type).
const wireVersion = 1

const flagReply = 1

func encodeEnvelope(e *Envelope) ([]byte, error) {
	var caller, errJSON []byte
	var err error
	if e.Caller != nil {
		if caller, err = json.Marshal(e.Caller); err != nil {
			return nil, err
		}
	}
	if e.Error != nil {
		if errJSON, err = json.Marshal(e.Error); err != nil {
			return nil, err
		}
	}
	n := 2 + 2*binary.MaxVarintLen64 + len(e.Body) + len(caller) + len(errJSON) +
		len(e.ID) + len(e.Name) + len(e.Target) + len(e.ReplyTo) + len(e.APIID) + len(e.ResourceUUID) + len(e.From) +
		9*binary.MaxVarintLen32
	b := make([]byte, 0, n)
	var flags byte
	if e.Reply {
		flags |= flagReply
	}
	b = append(b, wireVersion, flags)
	b = binary.AppendVarint(b, e.Deadline)
	b = binary.AppendUvarint(b, uint64(e.Hops))
	for _, s := range [...]string{e.ID, e.Name, e.Target, e.ReplyTo, e.APIID, e.ResourceUUID, e.From} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, s := range [...][]byte{caller, errJSON} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.Body...), nil
}

var errShortEnvelope = errors.New("envelope truncated")

// maxHops bounds an envelope's hop count on the wire.
const maxHops = 1 << 16

func decodeEnvelope(data []byte) (*Envelope, error) {
	if len(data) < 2 {
		return nil, errShortEnvelope
	}
	if data[0] != wireVersion {
		return nil, fmt.Errorf("envelope version %d not supported (want %d)", data[0], wireVersion)
	}
	e := &Envelope{Reply: data[1]&flagReply != 0}
	p := data[2:]
	v, n := binary.Varint(p)
	if n <= 0 {
		return nil, errShortEnvelope
	}
	e.Deadline, p = v, p[n:]
	h, n := binary.Uvarint(p)
	if n <= 0 {
		return nil, errShortEnvelope
	}
	if h > maxHops {
		// No node forwards a message this often (managementnode bounds
		// it far lower); as an int it could wrap negative and pass the
		// bound.
		return nil, fmt.Errorf("envelope hops %d out of range (at most %d)", h, maxHops)
	}
	e.Hops, p = int(h), p[n:]
	var fields [9][]byte
	for i := range fields {
		l, n := binary.Uvarint(p)
		if n <= 0 || uint64(len(p)-n) < l {
			return nil, errShortEnvelope
		}
		fields[i], p = p[n:n+int(l)], p[n+int(l):]
	}
	e.ID, e.Name, e.Target, e.ReplyTo = string(fields[0]), string(fields[1]), string(fields[2]), string(fields[3])
	e.APIID, e.ResourceUUID, e.From = string(fields[4]), string(fields[5]), string(fields[6])
	if len(fields[7]) > 0 {
		if err := json.Unmarshal(fields[7], &e.Caller); err != nil {
			return nil, fmt.Errorf("decode caller: %w", err)
		}
	}
	if len(fields[8]) > 0 {
		if err := json.Unmarshal(fields[8], &e.Error); err != nil {
			return nil, fmt.Errorf("decode error: %w", err)
		}
		if e.Error != nil && e.Error.Code == "" {
			// An error without a code would reach its caller as a 500
			// of nothing; our encoder never writes one.
			return nil, errors.New("decode error: the envelope's error has no code")
		}
	}
	if len(p) > 0 {
		e.Body = json.RawMessage(p)
	}
	return e, nil
}
