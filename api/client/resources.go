package client

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// CallOption changes one mutating call.
type CallOption func(*request)

// JobUUID makes the call use id as its X-Job-UUID instead of a random one:
// sending the same call again with the same id (from another process, after
// a crash) returns the same job instead of doing the work twice.
func JobUUID(id string) CallOption { return func(r *request) { r.jobUUID = id } }

// QueryParam adds name=value to the query of the call's URL, after
// Delete's deleteMode: the parameters of a DELETE call beyond its path,
// e.g. vmUuid of DELETE /v1/volumes/{uuid}/vm-instances (detach from that
// VM). Give it again for more parameters; an empty name adds nothing.
func QueryParam(name, value string) CallOption {
	return func(r *request) {
		if name == "" {
			return
		}
		if r.query == nil {
			r.query = url.Values{}
		}
		r.query.Add(name, value)
	}
}

// SystemTags sends tags as the call's "systemTags", beside its params or
// action (ZStack's system tags, e.g. staticIp::<l3NetworkUuid>::<ip> on a
// VM create). Give it again for more.
func SystemTags(tags ...string) CallOption {
	return func(r *request) { r.tags = append(r.tags, tags...) }
}

// DeleteMode is the deleteMode of a delete: how the server treats
// resources that depend on the one deleted.
type DeleteMode string

// The delete modes; "" lets the server choose (Permissive).
const (
	DeletePermissive DeleteMode = "Permissive"
	DeleteEnforcing  DeleteMode = "Enforcing"
)

// Session is the inventory of a login.
type Session struct {
	UUID        string `json:"uuid"`
	AccountUUID string `json:"accountUuid"`
	ExpiredDate string `json:"expiredDate"`
}

// Login logs in with an account's name and password, remembers the
// session for every later call (see SetSession) and returns it. As ZStack
// clients do, it sends the SHA-512 hex digest of the password, never the
// password itself. Wrong credentials are a *StatusError with status 401.
func (c *Client) Login(ctx context.Context, account, password string) (*Session, error) {
	op := "login as " + account
	if account == "" {
		return nil, invalid("login", "an account name is required")
	}
	sum := sha512.Sum512([]byte(password))
	body, err := marshalBody(op, map[string]any{"logInByAccount": map[string]string{
		"accountName": account,
		"password":    hex.EncodeToString(sum[:]),
	}})
	if err != nil {
		return nil, err
	}
	r := request{op: op, method: http.MethodPut, url: c.url("accounts", "login"), body: body, noAuth: true}
	var out struct {
		Inventory *Session `json:"inventory"`
	}
	a, err := c.call(ctx, r, &out, http.StatusOK)
	if err != nil {
		return nil, err
	}
	if out.Inventory == nil || out.Inventory.UUID == "" {
		return nil, badAnswer(r, a, errNoSession)
	}
	c.SetSession(out.Inventory.UUID)
	return out.Inventory, nil
}

var errNoSession = errors.New("login answer has no inventory.uuid (the session)")

// Logout ends the client's session on the server (DELETE
// /v1/accounts/sessions/{uuid}) and forgets it; without a session it does
// nothing. A session the server no longer knows is ended already.
func (c *Client) Logout(ctx context.Context) error {
	sess := c.Session()
	if sess == "" {
		return nil
	}
	r := request{op: "logout", method: http.MethodDelete, url: c.url("accounts", "sessions", sess), noAuth: true}
	if _, err := c.call(ctx, r, nil, http.StatusOK); err != nil {
		return err
	}
	c.SetSession("")
	return nil
}

// Create starts the creation of a resource: POST /v1/<resourcePath> with
// {"params": params}. resourcePath is the contract's ("zones", "hosts/kvm",
// "l3-networks/<uuid>/ip-ranges"); params is anything that encodes to a
// JSON object with ZStack's field names (nil sends {}).
func (c *Client) Create(ctx context.Context, resourcePath string, params any, opts ...CallOption) (*Job, error) {
	op := "create " + strings.Trim(resourcePath, "/")
	if strings.Trim(resourcePath, "/") == "" {
		return nil, invalid("create", "a resource path is required")
	}
	if params == nil {
		params = struct{}{}
	}
	body, err := marshalBody(op, map[string]any{"params": params})
	if err != nil {
		return nil, err
	}
	return c.startJob(ctx, applyOpts(request{op: op, method: http.MethodPost, url: c.url(resourcePath), body: body}, opts))
}

// Action starts an action on a resource: PUT
// /v1/<resourcePath>/<uuid>/actions with {action: body}, e.g. action
// "stopVmInstance" with body {"type": "cold"} (nil sends {}).
func (c *Client) Action(ctx context.Context, resourcePath, uuid, action string, body any, opts ...CallOption) (*Job, error) {
	op := action + " " + strings.Trim(resourcePath, "/") + " " + uuid
	switch {
	case strings.Trim(resourcePath, "/") == "":
		return nil, invalid(op, "a resource path is required")
	case uuid == "":
		return nil, invalid(op, "a resource uuid is required")
	case action == "":
		return nil, invalid(op, "an action name is required")
	}
	if body == nil {
		body = struct{}{}
	}
	data, err := marshalBody(op, map[string]any{action: body})
	if err != nil {
		return nil, err
	}
	return c.startJob(ctx, applyOpts(request{op: op, method: http.MethodPut, url: c.url(resourcePath, uuid, "actions"), body: data}, opts))
}

// Delete starts the deletion of a resource: DELETE /v1/<resourcePath>/<uuid>,
// with ?deleteMode=mode unless mode is "". For a VM this destroys it.
func (c *Client) Delete(ctx context.Context, resourcePath, uuid string, mode DeleteMode, opts ...CallOption) (*Job, error) {
	op := "delete " + strings.Trim(resourcePath, "/") + " " + uuid
	switch {
	case strings.Trim(resourcePath, "/") == "":
		return nil, invalid(op, "a resource path is required")
	case uuid == "":
		return nil, invalid(op, "a resource uuid is required")
	}
	u := c.url(resourcePath, uuid)
	if mode != "" {
		u += "?" + url.Values{"deleteMode": {string(mode)}}.Encode()
	}
	return c.startJob(ctx, applyOpts(request{op: op, method: http.MethodDelete, url: u}, opts))
}

func applyOpts(r request, opts []CallOption) request {
	for _, o := range opts {
		o(&r)
	}
	if len(r.tags) > 0 && len(r.body) > 0 {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &top); err == nil {
			if tags, err := json.Marshal(r.tags); err == nil {
				top["systemTags"] = tags
				if body, err := json.Marshal(top); err == nil {
					r.body = body
				}
			}
		}
		r.tags = nil
	}
	if len(r.query) > 0 {
		sep := "?"
		if strings.Contains(r.url, "?") {
			sep = "&"
		}
		r.url += sep + r.query.Encode()
		r.query = nil
	}
	return r
}

// queryAnswer is the body of GET /v1/<resources>.
type queryAnswer struct {
	Inventories []json.RawMessage `json:"inventories"`
	Total       *int              `json:"total"`
}

// Query lists resources: GET /v1/<resourcePath> with q's parameters. total
// is the server's "total" when it sent one (q.Count, q.ReplyWithCount),
// else the number of inventories returned.
func (c *Client) Query(ctx context.Context, resourcePath string, q Query) (inventories []json.RawMessage, total int, err error) {
	op := "query " + strings.Trim(resourcePath, "/")
	if strings.Trim(resourcePath, "/") == "" {
		return nil, 0, invalid("query", "a resource path is required")
	}
	u := c.url(resourcePath)
	if enc := q.Encode(); enc != "" {
		u += "?" + enc
	}
	var out queryAnswer
	if _, err := c.call(ctx, request{op: op, method: http.MethodGet, url: u}, &out, http.StatusOK); err != nil {
		return nil, 0, err
	}
	total = len(out.Inventories)
	if out.Total != nil {
		total = *out.Total
	}
	return out.Inventories, total, nil
}

// Get reads one resource: GET /v1/<resourcePath>/<uuid>. A resource the
// server does not list is an errcode.ResourceNotFound (the server's own
// 404, or made by the client from an empty answer).
func (c *Client) Get(ctx context.Context, resourcePath, uuid string) (json.RawMessage, error) {
	op := "get " + strings.Trim(resourcePath, "/") + " " + uuid
	switch {
	case strings.Trim(resourcePath, "/") == "":
		return nil, invalid(op, "a resource path is required")
	case uuid == "":
		return nil, invalid(op, "a resource uuid is required")
	}
	var out queryAnswer
	if _, err := c.call(ctx, request{op: op, method: http.MethodGet, url: c.url(resourcePath, uuid)}, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if len(out.Inventories) == 0 {
		return nil, notFound(op, resourcePath, uuid)
	}
	return out.Inventories[0], nil
}
