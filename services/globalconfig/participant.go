package globalconfig

import (
	"context"
	"encoding/json"
	"os"
	"strings"

	"mplane/errcode"
)

// RejectEnv is the test hook of the stage: a node whose environment sets
// it to "<category>/<name>" refuses every change of that configuration,
// so tests can abort a transaction on one node of a cluster. (Read at
// every stage, as a test hook may be; the one package-level read of the
// environment.)
const RejectEnv = "MPLANE_TEST_GLOBALCONFIG_REJECT"

// change is a transaction's payload.
type change struct {
	Value string `json:"value"`
}

// participant is this node's part in the configurations' transactions.
type participant struct{ s *Service }

func (p participant) decode(scope string, payload json.RawMessage) (config, change, error) {
	id := strings.TrimPrefix(scope, txnKind+"/")
	c, ok := p.s.configs[id]
	if !ok {
		return config{}, change{}, errcode.New(errcode.InvalidArgument, "no global configuration %s on this node (an older build?)", id)
	}
	var ch change
	if err := json.Unmarshal(payload, &ch); err != nil {
		return config{}, change{}, errcode.Wrap(errcode.MalformedMessage, err, "decode the change of global configuration %s", id)
	}
	return c, ch, nil
}

// Stage checks the value on this node.
func (p participant) Stage(_ context.Context, scope string, payload json.RawMessage) error {
	c, ch, err := p.decode(scope, payload)
	if err != nil {
		return err
	}
	if os.Getenv(RejectEnv) == c.ID() {
		return errcode.New(errcode.InvalidArgument, "rejected by this node's test hook (%s)", RejectEnv)
	}
	if _, err := p.s.opts.Check(c.Key, ch.Value); err != nil {
		return errcode.New(errcode.InvalidArgument, "global configuration %s: %v", c.ID(), err)
	}
	return nil
}

// Commit applies the durable value on this node, unless it has that
// version or a newer one (the resync may have come first). Before Start it
// applies nothing: the value is durable, and Start's resync applies it.
func (p participant) Commit(_ context.Context, scope string, payload json.RawMessage, version int64) error {
	c, ch, err := p.decode(scope, payload)
	if err != nil || !p.s.started.Load() {
		return err
	}
	return p.s.apply(c.ID(), ch.Value, version)
}
