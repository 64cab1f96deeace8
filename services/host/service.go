package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/netguard"
	"mplane/managementnode"
	"mplane/services/resource"
	"mplane/thread"
)

// DefaultAgentPort is kvmagent's port.
const DefaultAgentPort = 7070

// Options configure the host service. Zero values take the documented
// defaults.
type Options struct {
	DB        *gorm.DB             // required
	Bus       *cloudbus.Bus        // required
	Node      *managementnode.Node // required
	Scheduler *thread.Scheduler    // required
	Agents    *agentclient.Client  // required: its callback endpoint is served by this node
	Logger    *slog.Logger
	// EventURL is this node's event endpoint, given to agents at connect
	// as their sendCommandUrl (the host's UUID is added as a query).
	EventURL string // required
	// PingInterval (default 5s) and MaxPingFailures (default 3): a host
	// whose agent fails MaxPingFailures pings in a row is Disconnected.
	PingInterval    time.Duration
	MaxPingFailures int
	// ChainLevel is how many commands may run at once on one host
	// (default 10, as in ZStack).
	ChainLevel int
	// AddressPolicy is where hosts' agents may be: an address literal
	// outside it is refused when the host is added (the agent client's
	// dialer refuses the rest).
	AddressPolicy netguard.Policy
	// AgentScheme is how the hosts' agents are reached: "http" (the
	// default) or "https".
	AgentScheme string
	// ClaimToken is sent with every connect (protocol.ClaimHeader): an
	// agent started with the same claim token takes a connect that gives
	// it a secret only with it. Empty sends none.
	ClaimToken string
	// ConnectWait bounds how long adding a host waits for its agent to
	// answer /host/echo. Default 10s.
	ConnectWait time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between reconnect
	// attempts of a Disconnected host. Defaults PingInterval and 1m.
	ReconnectMin, ReconnectMax time.Duration
}

// Service owns the hosts: it adds and connects them, serializes commands to
// each host in a chain, tracks the hosts this node owns with pings, and
// authenticates and dispatches their agents' events.
type Service struct {
	opts   Options
	log    *slog.Logger
	db     *gorm.DB
	bus    *cloudbus.Bus
	node   *managementnode.Node
	sched  *thread.Scheduler
	agents *agentclient.Client

	tracker tracker

	// recorder, addF, reconnectF, deleteF and flows: the host's recorded
	// flows and their takeover.
	recorder   *flow.GormRecorder
	addF       *flow.Chain[addData]
	reconnectF *flow.Chain[reconnectData]
	deleteF    *flow.Chain[deleteData]
	flows      *flow.Registry

	// maxFailures is MaxPingFailures, changed at run time by
	// SetMaxPingFailures.
	maxFailures atomic.Int64
	// pingMu guards pingStop, which ends the periodic loop of the ping
	// tracker started last (nil before Start). Leaf.
	pingMu   sync.Mutex
	pingStop context.CancelFunc

	hooksMu   sync.RWMutex
	hooks     []func(ctx context.Context, ev AgentEvent)
	connHooks []func(ctx context.Context, h HostVO)      // OnConnected's
	delHooks  []func(tx *gorm.DB, hostUUID string) error // OnDelete's

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the kicked-rounds loop and agent-asked reconnects
}

// AgentEvent is an authenticated event from a host's agent, handed to the
// hooks on the host's owner.
type AgentEvent struct {
	HostUUID string
	Path     string
	Body     []byte
}

// New builds the service; Start serves it.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.Agents == nil || opts.EventURL == "" {
		return nil, errors.New("host: Options.DB, Bus, Node, Scheduler, Agents and EventURL are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 5 * time.Second
	}
	if opts.MaxPingFailures <= 0 {
		opts.MaxPingFailures = 3
	}
	if opts.ChainLevel <= 0 {
		opts.ChainLevel = 10
	}
	if opts.ConnectWait <= 0 {
		opts.ConnectWait = 10 * time.Second
	}
	if opts.ReconnectMin <= 0 {
		opts.ReconnectMin = opts.PingInterval
	}
	if opts.ReconnectMax <= 0 {
		opts.ReconnectMax = time.Minute
	}
	s := &Service{opts: opts, db: opts.DB, bus: opts.Bus, node: opts.Node, sched: opts.Scheduler, agents: opts.Agents,
		log: opts.Logger.With("component", "host")}
	s.tracker.init(s)
	s.maxFailures.Store(int64(opts.MaxPingFailures))
	s.recorder = flow.NewGormRecorder(opts.DB)
	var err error
	if s.addF, err = s.addChain(); err != nil {
		return nil, err
	}
	if s.reconnectF, err = s.reconnectChain(); err != nil {
		return nil, err
	}
	if s.deleteF, err = s.deleteChain(); err != nil {
		return nil, err
	}
	if s.flows, err = flow.NewRegistry(s.addF, s.reconnectF, s.deleteF); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Migrate creates the host tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&HostVO{}, &ReservationVO{}); err != nil {
		return fmt.Errorf("migrate host tables: %w", err)
	}
	return flow.Migrate(ctx, db)
}

// Start serves "host.<node>", hooks ring changes to a rescan and starts
// the ping tracker. The tables exist (Migrate).
func (s *Service) Start(ctx context.Context) error {
	err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgAddKVMHost, s.add)
		managementnode.Handle(mux, MsgReconnectHost, s.reconnectMsg)
		managementnode.Handle(mux, MsgDeleteHost, s.delete)
		managementnode.Handle(mux, MsgGetHost, s.get)
		managementnode.Handle(mux, MsgAgentCommand, s.command)
		managementnode.Handle(mux, msgAgentEvent, s.onEvent)
	})
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.tracker.kicked(s.ctx)
	}()
	s.node.OnRingChange(func(context.Context, *managementnode.Ring) { s.tracker.kick() })
	if err := s.SetPingInterval(s.opts.PingInterval); err != nil {
		return fmt.Errorf("start ping tracker: %w", err)
	}
	s.tracker.kick()
	// Takeover: after every ring change, roll back the adds, reconnects
	// and deletes dead owners left half-way.
	resource.Takeover{DB: s.db, Node: s.node, Recorder: s.recorder, Flows: s.flows, Log: s.log, What: "host",
		InChain: func(ctx context.Context, uuid, op string, fn func(context.Context) error) error {
			_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(uuid), Name: op, Level: 1},
				func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
			return err
		},
	}.Watch(s.ctx, &s.wg)
	return nil
}

// SetPingInterval restarts the ping tracker's periodic loop with interval d
// (Start starts it with Options.PingInterval); safe at any time and from
// any goroutine. A round in progress finishes: rounds run with the
// service's context, not the loop's, so replacing the loop cancels no
// ping (overlapping rounds are safe, each host is checked by one round at
// a time). The agent request timeout and ReconnectMin keep the values
// derived at New.
func (s *Service) SetPingInterval(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("host ping interval must be > 0 (got %s)", d)
	}
	ctx, stop := context.WithCancel(s.ctx)
	round := func(context.Context) error { return s.tracker.round(s.ctx) }
	if err := s.sched.Every(ctx, d, 0.1, "host-ping-tracker", round); err != nil {
		stop()
		return err
	}
	s.pingMu.Lock()
	old := s.pingStop
	s.pingStop = stop
	s.pingMu.Unlock()
	if old != nil {
		old()
		s.log.Info("ping interval changed", "interval", d)
	}
	return nil
}

// SetMaxPingFailures changes MaxPingFailures at run time, from the next
// check on; safe from any goroutine.
func (s *Service) SetMaxPingFailures(n int) error {
	if n < 1 {
		return fmt.Errorf("host max ping failures must be >= 1 (got %d)", n)
	}
	if old := s.maxFailures.Swap(int64(n)); old != int64(n) {
		s.log.Info("max ping failures changed", "max_failures", n)
	}
	return nil
}

func (s *Service) maxPingFailures() int { return int(s.maxFailures.Load()) }

// Stop (idempotent) ends the ping tracker and waits for the goroutines the service
// started (the scheduler owns and drains the periodic loop).
func (s *Service) Stop(context.Context) error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// OnAgentEvent registers fn for every authenticated agent event of the
// hosts this node owns (the VM service uses it for VM state reports).
func (s *Service) OnAgentEvent(fn func(ctx context.Context, ev AgentEvent)) {
	s.hooksMu.Lock()
	s.hooks = append(s.hooks, fn)
	s.hooksMu.Unlock()
}

// Run sends one agent command to a host through the host's owner, which
// runs it in the host's chain, and answers the agent's typed response.
func Run[Cmd, Rsp any](ctx context.Context, node *managementnode.Node, hostUUID string, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	return runAgentCommand(ctx, node, AgentCommandReq{HostUUID: hostUUID, Path: c.Path}, c, cmd)
}

// RunStorage is Run for a storage command (protocol/storage.go) to the
// primary storage a host's own agent serves, as ZStack's LocalStorage and
// SharedMountPoint storage are served by the KVM host's agent: storageURL
// is the primary storage's URL, sent in protocol.StorageHeader; the agent
// runs the command on the directory it maps that URL to (mplane agent kvm
// --storage URL=DIR). The command runs in the host's chain like the host's
// others.
func RunStorage[Cmd, Rsp any](ctx context.Context, node *managementnode.Node, hostUUID, storageURL string, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	if storageURL == "" {
		var rsp Rsp
		return rsp, errcode.New(errcode.InvalidArgument, "storage command %s for host %s names no primary storage: give its URL", c.Path, hostUUID)
	}
	return runAgentCommand(ctx, node, AgentCommandReq{HostUUID: hostUUID, Path: c.Path, Storage: storageURL}, c, cmd)
}

// runAgentCommand sends req, with cmd as its command, through the host's
// owner and decodes the agent's result.
func runAgentCommand[Cmd, Rsp any](ctx context.Context, node *managementnode.Node, req AgentCommandReq, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	var rsp Rsp
	body, err := json.Marshal(cmd)
	if err != nil {
		return rsp, errcode.Wrap(errcode.Internal, err, "encode %s command", c.Path)
	}
	req.Command = body
	// The caller acts through the host's owner: a caller paused past its
	// lease (a zombie whose flow resumed) must not, so it checks its own
	// lease first, as the owner checks its own.
	if err := node.CheckLease(ctx); err != nil {
		return rsp, err
	}
	// The host's owner may be gone before the command reaches it (its
	// queue has no consumer: nothing ran), or go away under the call (it
	// died, left, or was replaced and the agent refused its token): the
	// command is sent again, to the new owner once the ring has changed.
	// Agent commands are safe to repeat: a start of a running VM, a stop
	// of a stopped one, a bridge that exists succeed; a volume that was
	// made fails "already exists", it is not made twice.
	rep, err := managementnode.CallOwnerAgain(ctx, node, MsgAgentCommand, req)
	if err != nil {
		return rsp, err
	}
	if len(rep.Result) > 0 {
		if err := json.Unmarshal(rep.Result, &rsp); err != nil {
			return rsp, errcode.Wrap(errcode.MalformedMessage, err, "decode %s result of host %s", c.Path, req.HostUUID)
		}
	}
	return rsp, nil
}

func (s *Service) load(ctx context.Context, uuid string) (*HostVO, error) {
	var h HostVO
	err := s.db.WithContext(ctx).First(&h, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "host %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load host %s", uuid)
	}
	return &h, nil
}

func (s *Service) get(ctx context.Context, ref HostRef) (HostVO, error) {
	h, err := s.load(ctx, ref.UUID)
	if err != nil {
		return HostVO{}, err
	}
	return *h, nil
}

func (s *Service) agentURL(h *HostVO) string {
	scheme := s.opts.AgentScheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(h.ManagementIP, strconv.Itoa(h.AgentPort))
}

// eventURL is the sendCommandUrl h's agent posts its events to: the host
// and, for agents that cannot send the secret header, the event token of
// its secret (agentclient.EventToken).
func (s *Service) eventURL(h *HostVO) string {
	sep := "?"
	if strings.Contains(s.opts.EventURL, "?") {
		sep = "&"
	}
	u := s.opts.EventURL + sep + "hostUuid=" + h.UUID
	if h.Secret != "" {
		u += "&" + agentclient.EventTokenParam + "=" + agentclient.EventToken(h.Secret)
	}
	return u
}

func chainOf(hostUUID string) string { return "host-" + hostUUID }

// setStatus records a connection status change.
func (s *Service) setStatus(ctx context.Context, uuid, status string) error {
	return s.db.WithContext(ctx).Model(&HostVO{}).Where("uuid = ?", uuid).
		Updates(map[string]any{"status": status, "last_op_date": time.Now().UTC()}).Error
}
