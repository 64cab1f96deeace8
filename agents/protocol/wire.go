package protocol

// Header names. HTTP header names are case-insensitive; these are the
// spellings the Python framework uses.
const (
	// TaskUUIDHeader carries the task UUID of an async command, and of its
	// result when the agent posts it back.
	TaskUUIDHeader = "taskuuid"
	// CallbackURLHeader carries the URL where an async command's result is
	// posted.
	CallbackURLHeader = "callbackurl"
	// CommandPathHeader names the kind of an unsolicited event (agent ->
	// management node), e.g. /kvm/reportvmstate.
	CommandPathHeader = "commandpath"
	// ErrorHeader is set by the Python framework on a result it posts after
	// a handler raised an exception outside @replyerror; the body is then a
	// traceback, not JSON. mplane's agents never set it; the client reads it.
	ErrorHeader = "error"
	// SecretHeader is mplane's addition: the per-host secret given to an
	// agent at /host/connect. Commands carry it once the host has one; events
	// from mplane's Go agents carry it too.
	SecretHeader = "X-Mplane-Secret"
	// FenceHeader is mplane's addition: the fencing token of the node that
	// sends a command, the ring epoch (a decimal integer) under which it
	// owns the host. mplane's agents refuse a command whose token is lower
	// than the highest they have seen (409 Conflict): its sender was
	// replaced as the host's owner and has not noticed yet. Commands
	// without it are taken as before.
	FenceHeader = "X-Mplane-Fence"
	// NodeHeader is mplane's addition: the UUID of the management node that
	// sends a command, sent with FenceHeader. Agents log it and keep it in
	// their arrival log, so an audit can tell which node's commands a host
	// took, and that none came from a node after it was fenced.
	NodeHeader = "X-Mplane-Node"
	// ClaimHeader is mplane's addition: the claim token a management node
	// sends with /host/connect (its agent_claim_token). An agent started
	// with a claim token takes a connect that gives it a secret (its
	// first, or one that replaces the secret it holds: an explicit
	// re-claim) only with that token.
	ClaimHeader = "X-Mplane-Claim-Token"
)

// TimeoutField is the command body field (an integer, milliseconds) in which
// mplane's client sends the time remaining before the management node stops
// waiting for the command's result. It is relative, so agent and node clocks
// need not agree: the agent's deadline is arrival + timeoutMs. The client
// does not add it when the command already has a field of that name.
const TimeoutField = "timeoutMs"

// Default paths of the management node's endpoints, the ones ZStack uses
// (RESTConstant.CALLBACK_PATH and COMMAND_CHANNEL_PATH under /asyncrest).
// They are suggestions for whoever mounts the handlers; agents use whatever
// URL they are given.
const (
	DefaultCallbackPath = "/asyncrest/callback"
	DefaultEventPath    = "/asyncrest/sendcommand"
)

// Content types. The Python agent (CherryPy) answers with HTMLContentType
// although the body is JSON; results it posts are JSONContentType.
const (
	JSONContentType        = "application/json"
	JSONContentTypeCharset = "application/json; charset=utf-8"
	HTMLContentType        = "text/html;charset=utf-8"
)

// Response is the envelope every result carries: success is the truth; on
// success error is the empty string. Agent response types embed it.
type Response struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
}
