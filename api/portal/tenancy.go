package portal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"time"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/quota"
	"mplane/api/rest"
	"mplane/api/route"
	"mplane/api/tenancy"
	"mplane/errcode"
	"mplane/uid"
)

// Who may do what (docs/security.md): an admin account everything; a
// normal account what each resource's route.Access allows, decided here,
// once for every resource:
//
//   - AdminOnly resources refuse it everything (403); ReadOnly ones every
//     change (403); Shared ones their creates and changes (403, or 404 when
//     the resource is not shared to it either).
//   - Its queries, and every read a call's Build makes, are scoped
//     (tenancy.Scope): another account's rows are absent.
//   - A change (action, delete, call) of a resource it does not own is
//     refused: 404 when it cannot see the resource (as for one that does
//     not exist: no existence oracle), 403 when it is shared to it.
//   - What it creates is recorded as its own before the job starts.

// tablesOf lists the tables of the declared resources, each with what a
// normal account sees of it.
func tablesOf(db *gorm.DB, resources []route.Resource) ([]tenancy.Table, map[string]string, error) {
	var tables []tenancy.Table
	byPath := map[string]string{}
	for _, res := range resources {
		if !res.Query.Declared() {
			continue
		}
		name, err := res.Query.Table(db)
		if err != nil {
			return nil, nil, fmt.Errorf("portal: table of %s: %w", res.Path, err)
		}
		byPath[res.Path] = name
		t := tenancy.Table{Name: name}
		switch res.Access {
		case route.Owned:
			t.Visibility = tenancy.OwnerOnly
		case route.Shared, route.OwnedShared:
			t.Visibility = tenancy.OwnerOrShared
		}
		if c, ok := res.Query.Model().(interface{ TenancyParentColumn() string }); ok {
			t.ParentColumn = c.TenancyParentColumn()
		}
		tables = append(tables, t)
	}
	return tables, byPath, nil
}

// caller is the request's identity; a request without one is refused
// before it gets here (the auth middleware).
func caller(r *http.Request) (auth.Identity, error) {
	id, ok := auth.FromContext(r.Context())
	if !ok {
		return auth.Identity{}, errcode.New(errcode.Unauthenticated, "no session: the API must run behind the auth middleware")
	}
	return id, nil
}

// scope is the context the work for id is done in at the edge.
func scope(ctx context.Context, id auth.Identity) context.Context {
	if id.Admin {
		return tenancy.Unscoped(ctx)
	}
	return tenancy.Scope(ctx, id.AccountUUID)
}

// adminOnly is the refusal of what only admins may do.
func adminOnly(res route.Resource, what string) error {
	return errcode.New(errcode.PermissionDenied, "%s %s needs an admin account", what, res.Name)
}

// mayRead refuses a normal account the queries of infrastructure.
func mayRead(id auth.Identity, res route.Resource) error {
	if !id.Admin && res.Access == route.AdminOnly {
		return adminOnly(res, "querying")
	}
	return nil
}

// mayChange refuses a normal account what the resource's Access does not
// let it do at all: any change of AdminOnly and ReadOnly resources, a
// create of a Shared one.
func mayChange(id auth.Identity, res route.Resource, op route.Op) error {
	if id.Admin {
		return nil
	}
	switch res.Access {
	case route.AdminOnly, route.ReadOnly:
		return adminOnly(res, "changing a")
	case route.Shared:
		if op.Creates() {
			return adminOnly(res, "creating a")
		}
	}
	return nil
}

// mayAct refuses a normal account a change of a resource it does not own:
// not found when it cannot see it, denied when it is shared to it.
func (p *Portal) mayAct(ctx context.Context, id auth.Identity, res route.Resource, uuid string) error {
	if id.Admin {
		return nil
	}
	rel, err := tenancy.RelationOf(ctx, p.db, uuid, id.AccountUUID)
	if err != nil {
		return err
	}
	switch rel {
	case tenancy.Owner:
		return nil
	case tenancy.Receiver:
		return errcode.New(errcode.PermissionDenied, "%s %s is shared with this account: only its owner may change it", res.Name, uuid)
	}
	return errcode.New(errcode.ResourceNotFound, "%s %s not found", res.Name, uuid)
}

// digesting makes r's body, as the decoder reads it, part of the request's
// digest (jobs.NewJob.Digest): a retry with the same X-Job-UUID must
// repeat it.
func digesting(r *http.Request) hash.Hash {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", r.Method, r.URL.RequestURI())
	if r.Body != nil {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(r.Body, h), r.Body}
	}
	return h
}

func digestOf(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// sweepOwners runs the tenancy sweeper: records of resources gone for
// longer than a job can take are forgotten, children left without one get
// their parent's owner.
func (p *Portal) sweepOwners(ctx context.Context) error {
	made, forgot, err := p.guard.Sweep(ctx, p.db, p.JobTimeout()+10*time.Minute)
	if made > 0 || forgot > 0 {
		p.log.Info("ownership records swept", "made", made, "forgot", forgot)
	}
	if p.opts.Quota != nil {
		n, qerr := p.opts.Quota.Sweep(ctx, p.JobTimeout()+10*time.Minute)
		if n > 0 {
			p.log.Info("quota of gone resources released", "claims", n)
		}
		err = errors.Join(err, qerr)
	}
	return err
}

// Guard is the ownership filter the portal installed on its database.
func (p *Portal) Guard() *tenancy.Guard { return p.guard }

// shareParams are the params of shareResource and revokeResourceSharing.
type shareParams struct {
	ResourceUUIDs []string `json:"resourceUuids" api:"required"`
	AccountUUIDs  []string `json:"accountUuids"`
	ToPublic      bool     `json:"toPublic"`
	// All, for a revoke, revokes every sharing of the resources.
	All bool `json:"all"`
}

// maxShared bounds the resources and accounts one call names.
const maxShared = 1000

func (p *shareParams) Validate() error {
	switch {
	case len(p.ResourceUUIDs) == 0 || len(p.ResourceUUIDs) > maxShared:
		return errcode.New(errcode.InvalidArgument, "resourceUuids must name 1 to %d resources, got %d", maxShared, len(p.ResourceUUIDs))
	case len(p.AccountUUIDs) > maxShared:
		return errcode.New(errcode.InvalidArgument, "accountUuids must name at most %d accounts, got %d", maxShared, len(p.AccountUUIDs))
	}
	for _, u := range append(append([]string(nil), p.ResourceUUIDs...), p.AccountUUIDs...) {
		if !uid.Valid(u) {
			return errcode.New(errcode.InvalidArgument, "%q is not a UUID (32 hex digits)", truncate(u, 64))
		}
	}
	return nil
}

// ShareHandler serves PUT /v1/accounts/resources/actions, ZStack's
// shareResource and revokeResourceSharing: the owner of a shareable
// resource (images, offerings, L3 networks), or an admin, shares it with
// accounts or with every account (toPublic), or revokes that. A resource
// the caller cannot see is not found; one it sees but does not own, or of
// a kind that is not shared, is refused. It answers 200 {}.
func (p *Portal) ShareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := caller(r)
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		a, err := rest.DecodeAction(r, "shareResource", "revokeResourceSharing")
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		var sp shareParams
		if err := a.Decode(&sp); err != nil {
			rest.WriteError(w, err)
			return
		}
		if a.Name == "shareResource" && !sp.ToPublic && len(sp.AccountUUIDs) == 0 {
			rest.WriteError(w, errcode.New(errcode.InvalidArgument, "shareResource needs accountUuids or toPublic"))
			return
		}
		if err := p.share(r.Context(), id, a.Name == "shareResource", sp); err != nil {
			rest.WriteError(w, err)
			return
		}
		rest.WriteJSON(w, http.StatusOK, struct{}{})
	})
}

func (p *Portal) share(ctx context.Context, id auth.Identity, share bool, sp shareParams) error {
	db := p.db.WithContext(tenancy.Unscoped(ctx))
	var refs []tenancy.RefVO
	if err := db.Where("resource_uuid IN ?", sp.ResourceUUIDs).Find(&refs).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "read the owners of the resources")
	}
	byUUID := map[string]tenancy.RefVO{}
	for _, ref := range refs {
		byUUID[ref.ResourceUUID] = ref
	}
	for _, u := range sp.ResourceUUIDs {
		ref, ok := byUUID[u]
		switch {
		case !ok && id.Admin:
			// No owner on record (made by the node itself, or before
			// records were kept): an admin's, if it exists.
			table, err := p.guard.Locate(ctx, p.db, u)
			if err != nil {
				return err
			}
			if table != "" {
				if err := tenancy.Claim(ctx, p.db, table, u, id.AccountUUID); err != nil {
					return err
				}
				ref, ok = tenancy.RefVO{ResourceUUID: u, AccountUUID: id.AccountUUID, ResourceType: table}, true
				byUUID[u] = ref
			}
		case ok && !id.Admin && ref.AccountUUID != id.AccountUUID:
			rel, err := tenancy.RelationOf(ctx, p.db, u, id.AccountUUID)
			if err != nil {
				return err
			}
			if rel != tenancy.Stranger {
				return errcode.New(errcode.PermissionDenied, "resource %s is shared with this account: only its owner may share it", u)
			}
			ok = false
		}
		if !ok {
			return errcode.New(errcode.ResourceNotFound, "resource %s not found", u)
		}
		if !p.guard.Shareable(ref.ResourceType) {
			return errcode.New(errcode.InvalidArgument, "resource %s is of a kind that is not shared (%s); images, offerings and L3 networks are", u, ref.ResourceType)
		}
	}
	receivers := append([]string(nil), sp.AccountUUIDs...)
	if sp.ToPublic {
		receivers = append(receivers, "")
	}
	if share && len(sp.AccountUUIDs) > 0 {
		var n int64
		if err := db.Table("accounts").Where("uuid IN ?", sp.AccountUUIDs).Count(&n).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "look up the accounts")
		}
		if int(n) != len(dedupe(sp.AccountUUIDs)) {
			return errcode.New(errcode.InvalidArgument, "accountUuids names an account that does not exist")
		}
	}
	return db.Transaction(func(tx *gorm.DB) error {
		for _, u := range sp.ResourceUUIDs {
			ref := byUUID[u]
			var err error
			if share {
				err = tenancy.Share(ctx, tx, u, ref.AccountUUID, ref.ResourceType, receivers)
			} else {
				err = tenancy.Revoke(ctx, tx, u, receivers, sp.All)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func dedupe(in []string) map[string]bool {
	out := make(map[string]bool, len(in))
	for _, s := range in {
		out[s] = true
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// reserve takes, for a normal account's create, the quota its request
// demands (quota.Demander), before the job's work is sent.
func (p *Portal) reserve(ctx context.Context, id auth.Identity, op route.Op, job jobs.Job) error {
	if p.opts.Quota == nil || id.Admin {
		return nil
	}
	req, err := op.Request(json.RawMessage(job.Body))
	if err != nil {
		return err
	}
	d, ok := req.(quota.Demander)
	if !ok {
		return nil
	}
	resource, table, demand := d.QuotaDemand()
	return p.opts.Quota.Reserve(ctx, id.AccountUUID, resource, table, job.UUID, demand)
}

// settleQuota releases, once a job has finished, the quota of what it made
// or acted on that no longer exists.
func (p *Portal) settleQuota(job jobs.Job) {
	if p.opts.Quota == nil || !job.Finished() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := p.opts.Quota.Settle(ctx, job.UUID, job.ResourceUUID); err != nil {
		p.log.Warn("release the quota of a finished job: left to the sweeper", "job_uuid", job.UUID, "err", err)
	} else if n > 0 {
		p.log.Debug("quota released", "job_uuid", job.UUID, "claims", n)
	}
}

// checkWebhook refuses an X-Web-Hook whose host is an address the policy
// does not allow (a name is checked when it is dialled).
func (p *Portal) checkWebhook(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil // jobs.Store.Create refuses it, with the rules
	}
	if err := p.opts.WebhookPolicy.CheckHost(u.Hostname()); err != nil {
		return errcode.New(errcode.InvalidArgument, "%s: %v; an operator may allow it with webhook_allow", jobs.HeaderWebHook, err)
	}
	return nil
}
