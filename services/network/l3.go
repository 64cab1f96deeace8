package network

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

const (
	maxNameLen        = 255
	maxDescriptionLen = 2048
	maxForeignUUIDLen = 64
)

// uuidPattern is the form of mplane's (and ZStack's) UUIDs.
var uuidPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// L3Params are the parameters of an L3 network, named as in ZStack's
// CreateL3Network API; the JSON form is the REST API's "params".
type L3Params struct {
	// UUID of the new network: 32 lowercase hex digits; empty, a new one.
	// Not part of the JSON form: the REST layer chooses the UUID.
	UUID        string `json:"-"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// ZoneUUID is required unless L2NetworkUUID is given; Check verifies
	// that the zone exists.
	ZoneUUID string `json:"zoneUuid,omitempty"`
	// L2NetworkUUID, if given, is the L2 network the L3 network is on: it
	// must exist and not be a VxlanNetworkPool, and its zone is the L3
	// network's (a zoneUuid given too must be the same).
	L2NetworkUUID string `json:"l2NetworkUuid,omitempty"`
	// Type is L3BasicNetwork, the default when empty.
	Type string `json:"type,omitempty"`
}

// Validate checks the parameters without touching the database; the error
// is an errcode.InvalidArgument.
func (p L3Params) Validate() error {
	switch {
	case p.UUID != "" && !uuidPattern.MatchString(p.UUID):
		return errcode.New(errcode.InvalidArgument, "uuid %q is not 32 lowercase hex digits", p.UUID)
	case strings.TrimSpace(p.Name) == "":
		return errcode.New(errcode.InvalidArgument, "name is required")
	case utf8.RuneCountInString(p.Name) > maxNameLen:
		return errcode.New(errcode.InvalidArgument, "name is longer than %d characters", maxNameLen)
	case utf8.RuneCountInString(p.Description) > maxDescriptionLen:
		return errcode.New(errcode.InvalidArgument, "description is longer than %d characters", maxDescriptionLen)
	case strings.TrimSpace(p.ZoneUUID) == "" && strings.TrimSpace(p.L2NetworkUUID) == "":
		return errcode.New(errcode.InvalidArgument, "zoneUuid is required (or l2NetworkUuid, whose zone the network is in)")
	case len(p.ZoneUUID) > maxForeignUUIDLen:
		return errcode.New(errcode.InvalidArgument, "zoneUuid is longer than %d characters", maxForeignUUIDLen)
	case len(p.L2NetworkUUID) > maxForeignUUIDLen:
		return errcode.New(errcode.InvalidArgument, "l2NetworkUuid is longer than %d characters", maxForeignUUIDLen)
	case p.Type != "" && p.Type != L3BasicNetwork:
		return errcode.New(errcode.InvalidArgument, "type %q is not supported; the only type is %s", p.Type, L3BasicNetwork)
	}
	return nil
}

// Check verifies p's references (InvalidArgument otherwise, as for a
// malformed parameter): the L2 network if given, whose zone becomes p's,
// and the zone. Validate checks the rest.
func (p *L3Params) Check(ctx context.Context, gdb *gorm.DB) error {
	if p.L2NetworkUUID != "" {
		l2, err := GetL2Network(ctx, gdb, p.L2NetworkUUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return errcode.New(errcode.InvalidArgument, "l2NetworkUuid %s does not exist", p.L2NetworkUUID)
		}
		if err != nil {
			return err
		}
		if err := l3OnL2(*p, l2); err != nil {
			return err
		}
		p.ZoneUUID = l2.ZoneUUID
	}
	return resource.MustExist(ctx, gdb, &zone.ZoneVO{}, "zoneUuid", p.ZoneUUID)
}

// l3OnL2 checks that an L3 network of p can be on l2.
func l3OnL2(p L3Params, l2 L2NetworkVO) error {
	if l2.Type == VxlanNetworkPool {
		return errcode.New(errcode.InvalidArgument, "l2NetworkUuid %s is a %s: an L3 network is on one of its vxlan networks, not on the pool",
			l2.UUID, VxlanNetworkPool)
	}
	if p.ZoneUUID != "" && p.ZoneUUID != l2.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "zoneUuid %s is not the zone %s of l2 network %s; leave it out, or give the L2 network's",
			p.ZoneUUID, l2.ZoneUUID, l2.UUID)
	}
	return nil
}

// CreateL3Network validates p and creates an Enabled L3 network without IP
// ranges (add them with AddIpRange). It does not look the zone up: see
// Check. On an L2 network, it locks the L2 network's row while it inserts
// (so that the L2 network's delete sees it or it sees no L2 network:
// ResourceNotFound). A UUID that exists already is InvalidArgument.
func CreateL3Network(ctx context.Context, gdb *gorm.DB, p L3Params) (L3NetworkVO, error) {
	if err := p.Validate(); err != nil {
		return L3NetworkVO{}, err
	}
	if p.UUID == "" {
		p.UUID = uid.New()
	}
	l3 := l3Row(resource.NewBase(p.UUID, "", ""), p)
	err := db.Transaction(ctx, gdb.WithContext(ctx), func(tx *gorm.DB) error {
		if p.L2NetworkUUID != "" {
			l2, err := lockL2(tx, p.L2NetworkUUID)
			if err != nil {
				return err
			}
			if err := l3OnL2(p, l2); err != nil {
				return err
			}
			l3.ZoneUUID = l2.ZoneUUID
		}
		return tx.Create(&l3).Error
	})
	var ce *errcode.Error
	switch {
	case err == nil:
		return l3, nil
	case errors.As(err, &ce):
		return L3NetworkVO{}, err
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return L3NetworkVO{}, errcode.New(errcode.InvalidArgument, "an L3 network with uuid %s already exists", l3.UUID)
	}
	return L3NetworkVO{}, fmt.Errorf("create l3 network %q: %w", p.Name, err)
}

// createL3 is the L3 kind's create: CreateL3Network with the UUID the API
// chose.
func createL3(ctx context.Context, gdb *gorm.DB, uuid string, p L3Params) (L3NetworkVO, error) {
	p.UUID = uuid
	return CreateL3Network(ctx, gdb, p)
}

func l3Row(b resource.Base, p L3Params) L3NetworkVO {
	b.Name, b.Description = p.Name, p.Description
	l3 := L3NetworkVO{Base: b, ZoneUUID: p.ZoneUUID, Type: L3BasicNetwork, State: L3StateEnabled}
	if p.L2NetworkUUID != "" {
		l2 := p.L2NetworkUUID
		l3.L2NetworkUUID = &l2
	}
	return l3
}

// GetL3Network reads an L3 network; a missing one is ResourceNotFound.
func GetL3Network(ctx context.Context, gdb *gorm.DB, uuid string) (L3NetworkVO, error) {
	return getL3(gdb.WithContext(ctx), uuid)
}

func getL3(tx *gorm.DB, uuid string) (L3NetworkVO, error) {
	var l3 L3NetworkVO
	err := tx.Where("uuid = ?", uuid).Take(&l3).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return L3NetworkVO{}, errcode.New(errcode.ResourceNotFound, "l3 network %s not found", uuid)
	}
	if err != nil {
		return L3NetworkVO{}, fmt.Errorf("read l3 network %s: %w", uuid, err)
	}
	return l3, nil
}

// lockL3 reads the L3 network and locks its row until the transaction ends
// (SQLite: the transaction already holds the database's write lock).
func lockL3(tx *gorm.DB, uuid string) (L3NetworkVO, error) {
	return getL3(tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}), uuid)
}

// DeleteL3Network deletes an L3 network and its IP ranges. It fails with
// InvalidState while any of its IPs is in use. Deleting a network that does
// not exist succeeds, so a repeated delete is harmless.
func DeleteL3Network(ctx context.Context, gdb *gorm.DB, uuid string) error {
	err := gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := lockL3(tx, uuid); err != nil {
			if errcode.Has(err, errcode.ResourceNotFound) {
				return nil
			}
			return err
		}
		var used int64
		if err := tx.Model(&UsedIpVO{}).Where("l3_network_uuid = ?", uuid).Count(&used).Error; err != nil {
			return fmt.Errorf("count used ips: %w", err)
		}
		if used > 0 {
			return errcode.New(errcode.InvalidState, "l3 network %s has %d IP address(es) in use; release them first", uuid, used)
		}
		if err := tx.Where("l3_network_uuid = ?", uuid).Delete(&IpRangeVO{}).Error; err != nil {
			return fmt.Errorf("delete ip ranges: %w", err)
		}
		if err := tx.Where("uuid = ?", uuid).Delete(&L3NetworkVO{}).Error; err != nil {
			return fmt.Errorf("delete l3 network row: %w", err)
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		// An IP was allocated between the count and the delete.
		return errcode.New(errcode.InvalidState, "l3 network %s has IP addresses in use; release them first", uuid)
	case isDeadlock(err):
		return errcode.Wrap(errcode.Conflict, err, "delete l3 network %s raced with an allocation", uuid)
	}
	var ce *errcode.Error
	if errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("delete l3 network %s: %w", uuid, err)
}
