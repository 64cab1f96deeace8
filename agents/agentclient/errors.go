package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"mplane/errcode"
)

// StatusError is an agent's answer with a status other than 200 to a
// command: 400 for a missing taskuuid on an async path, 500 for a taskuuid
// on a sync path, 401 for a missing secret, 404 for an unknown path, 503
// while the agent stops. It is the cause of the errcode.AgentError the
// client returns; find it with errors.As.
type StatusError struct {
	URL    string
	Status int
	// Text is the agent's error text if the body was a result envelope,
	// else the start of the body.
	Text string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Text)
}

func statusError(agentURL, path string, status int, body []byte) error {
	se := &StatusError{URL: joinURL(agentURL, path), Status: status, Text: answerText(body)}
	if status == http.StatusConflict && strings.HasPrefix(se.Text, StaleFencePrefix) {
		// The agent took a newer owner's commands: this node is no longer
		// the host's owner, and the command did not run.
		return errcode.Wrap(errcode.NodeUnavailable, se, "agent %s%s refused the command: %s", agentURL, path, se.Text)
	}
	e := errcode.Wrap(errcode.AgentError, se, "agent %s%s answered HTTP %d: %s", agentURL, path, status, se.Text)
	// 502-504: the agent (or a proxy) is temporarily unable to take the
	// command, which therefore did not run.
	e.Retryable = status == http.StatusServiceUnavailable || status == http.StatusBadGateway ||
		status == http.StatusGatewayTimeout
	return e
}

// StaleFencePrefix starts the text of an agent's 409 answer to a command
// under an older fencing token than one it has seen (protocol.FenceHeader);
// the client turns it into errcode.NodeUnavailable (retryable: the command
// did not run, and the host's current owner may take it).
const StaleFencePrefix = "stale fencing token"

func answerText(body []byte) string {
	var env struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != "" {
		return env.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// transportError classifies an error sending a command. A failure to
// connect is retryable: the agent never saw the command. Any other
// transport error is not: the agent may have received it.
func transportError(ctx context.Context, agentURL, path string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return errcode.Wrap(codeOfContextErr(ctxErr), err, "agent %s%s", agentURL, path)
	}
	e := errcode.Wrap(errcode.AgentError, err, "agent %s%s unreachable", agentURL, path)
	var op *net.OpError
	e.Retryable = errors.As(err, &op) && op.Op == "dial"
	return e
}
