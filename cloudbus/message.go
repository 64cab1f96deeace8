package cloudbus

// Msg defines a request/reply message: a registered name and the Go types of
// its request and reply bodies. Services declare their messages as package
// variables, e.g.
//
//	var MsgStartVm = cloudbus.NewMsg[StartVmReq, StartVmReply]("vm.StartVmInstance")
//
// and register handlers with Handle; callers use Call, Send or CallAll.
type Msg[Req, Rep any] struct{ name string }

// NewMsg returns the definition of a message named name.
func NewMsg[Req, Rep any](name string) Msg[Req, Rep] {
	if name == "" {
		panic("cloudbus: message name must not be empty")
	}
	return Msg[Req, Rep]{name: name}
}

// Name is the registered name that travels in the envelope.
func (m Msg[Req, Rep]) Name() string { return m.name }

// Event defines an event published to every subscriber in the cluster. Its
// name is also the topic routing key: dot-separated words ("node.left"),
// matched by subscriber patterns with AMQP topic rules ("*" one word, "#"
// zero or more words).
type Event[T any] struct{ name string }

// NewEvent returns the definition of an event named name.
func NewEvent[T any](name string) Event[T] {
	if name == "" {
		panic("cloudbus: event name must not be empty")
	}
	return Event[T]{name: name}
}

// Name is the event's name and routing key.
func (e Event[T]) Name() string { return e.name }

// Empty is the body of a message or reply that carries nothing.
type Empty struct{}
