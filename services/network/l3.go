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
// CreateL3Network API (APICreateL3NetworkMsg and the Java SDK's
// CreateL3NetworkAction); the JSON form is the REST API's "params".
type L3Params struct {
	// UUID of the new network: 32 lowercase hex digits; empty, a new one.
	// Not part of the JSON form: the REST layer chooses the UUID.
	UUID        string `json:"-"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// L2NetworkUUID is the L2 network the L3 network is on, required: it
	// must exist and not be a VxlanNetworkPool (an L3 network goes on one
	// of its VXLAN networks); its zone is the L3 network's.
	L2NetworkUUID string `json:"l2NetworkUuid"`
	// ZoneUUID is not ZStack's: the zone is the L2 network's. A caller that
	// still sends it must send that zone (Check refuses another); Check
	// sets it.
	ZoneUUID string `json:"zoneUuid,omitempty"`
	// Type is L3BasicNetwork, the default when empty.
	Type string `json:"type,omitempty"`
	// Category is Private (the default), Public or System, whatever the
	// case (Validate writes ZStack's spelling); System goes with System
	// true, the others with false.
	Category string `json:"category,omitempty"`
	System   bool   `json:"system,omitempty"`
	// IPVersion is 4, the default when 0; mplane's L3 networks are IPv4.
	IPVersion int `json:"ipVersion,omitempty"`
	// EnableIPAM is accepted as ZStack's SDK sends it (true); false is
	// refused: mplane allocates every NIC's address.
	EnableIPAM *bool `json:"enableIPAM,omitempty"`
	// DNSDomain, if given, is a domain name (RFC 1123 labels).
	DNSDomain string `json:"dnsDomain,omitempty"`
}

// Validate checks the parameters without touching the database and fills
// the defaults (category Private, ipVersion 4); the error is an
// errcode.InvalidArgument listing every problem.
func (p *L3Params) Validate() error {
	var problems []string
	if p.UUID != "" && !uuidPattern.MatchString(p.UUID) {
		problems = append(problems, fmt.Sprintf("uuid %q is not 32 lowercase hex digits", p.UUID))
	}
	switch {
	case strings.TrimSpace(p.Name) == "":
		problems = append(problems, "name is required")
	case utf8.RuneCountInString(p.Name) > maxNameLen:
		problems = append(problems, fmt.Sprintf("name is longer than %d characters", maxNameLen))
	}
	if utf8.RuneCountInString(p.Description) > maxDescriptionLen {
		problems = append(problems, fmt.Sprintf("description is longer than %d characters", maxDescriptionLen))
	}
	switch {
	case strings.TrimSpace(p.L2NetworkUUID) == "":
		problems = append(problems, "l2NetworkUuid is required: an L3 network is on an L2 network, whose zone it is in")
	case len(p.L2NetworkUUID) > maxForeignUUIDLen:
		problems = append(problems, fmt.Sprintf("l2NetworkUuid is longer than %d characters", maxForeignUUIDLen))
	}
	if len(p.ZoneUUID) > maxForeignUUIDLen {
		problems = append(problems, fmt.Sprintf("zoneUuid is longer than %d characters", maxForeignUUIDLen))
	}
	if p.Type != "" && p.Type != L3BasicNetwork {
		problems = append(problems, fmt.Sprintf("type %q is not supported; the only type is %s", p.Type, L3BasicNetwork))
	}
	problems = append(problems, p.categoryProblems()...)
	switch p.IPVersion {
	case 0:
		p.IPVersion = IPv4
	case IPv4:
	case 6:
		problems = append(problems, "ipVersion 6 is not supported: mplane's L3 networks are IPv4 (ipVersion 4)")
	default:
		problems = append(problems, fmt.Sprintf("ipVersion %d is not an IP version; the only one supported is 4", p.IPVersion))
	}
	if p.EnableIPAM != nil && !*p.EnableIPAM {
		problems = append(problems, "enableIPAM false is not supported: IPAM cannot be disabled (every NIC's address is allocated from the L3 network's IP ranges)")
	}
	if p.DNSDomain != "" {
		if msg := domainProblem(p.DNSDomain); msg != "" {
			problems = append(problems, fmt.Sprintf("dnsDomain %q is not a valid domain name: %s", p.DNSDomain, msg))
		}
	}
	return resource.Invalid(problems)
}

// categoryProblems checks the category, written in ZStack's spelling, and
// its combination with system (ZStack's L3NetworkCategory.validCombination).
func (p *L3Params) categoryProblems() []string {
	if p.Category == "" {
		p.Category = L3CategoryPrivate
	}
	known := false
	for _, c := range []string{L3CategoryPublic, L3CategoryPrivate, L3CategorySystem} {
		if strings.EqualFold(p.Category, c) {
			p.Category, known = c, true
		}
	}
	switch {
	case !known:
		return []string{fmt.Sprintf("category %q is not one of %s, %s, %s", p.Category, L3CategoryPublic, L3CategoryPrivate, L3CategorySystem)}
	case p.System && p.Category != L3CategorySystem:
		return []string{fmt.Sprintf("category %s does not go with system true: a system network's category is %s", p.Category, L3CategorySystem)}
	case !p.System && p.Category == L3CategorySystem:
		return []string{fmt.Sprintf("category %s needs system true (a network that is not a system one is %s or %s)", L3CategorySystem, L3CategoryPublic, L3CategoryPrivate)}
	}
	return nil
}

// domainProblem says what is wrong with a domain name: at most 253
// characters of dot-separated labels of 1 to 63 letters, digits and
// hyphens, no label starting or ending with a hyphen. "" if none.
func domainProblem(name string) string {
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		switch {
		case label == "":
			return "an empty label"
		case len(label) > 63:
			return fmt.Sprintf("label %q is longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with '-'", label)
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Sprintf("label %q has %q (letters, digits and '-' only)", label, r)
			}
		}
	}
	return ""
}

// Check verifies p's L2 network (InvalidArgument otherwise, as for a
// malformed parameter) and makes its zone p's. Validate checks the rest.
func (p *L3Params) Check(ctx context.Context, gdb *gorm.DB) error {
	if strings.TrimSpace(p.L2NetworkUUID) == "" {
		return errcode.New(errcode.InvalidArgument, "l2NetworkUuid is required: an L3 network is on an L2 network, whose zone it is in")
	}
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
	return nil
}

// l3OnL2 checks that an L3 network of p can be on l2.
func l3OnL2(p L3Params, l2 L2NetworkVO) error {
	if l2.Type == VxlanNetworkPool {
		return errcode.New(errcode.InvalidArgument, "l2NetworkUuid %s is a %s: an L3 network is on one of its vxlan networks, not on the pool",
			l2.UUID, VxlanNetworkPool)
	}
	if p.ZoneUUID != "" && p.ZoneUUID != l2.ZoneUUID {
		return errcode.New(errcode.InvalidArgument,
			"zoneUuid %s is not the zone %s of l2 network %s: an L3 network is in its L2 network's zone (zoneUuid is not a parameter of ZStack's CreateL3Network; leave it out)",
			p.ZoneUUID, l2.ZoneUUID, l2.UUID)
	}
	return nil
}

// CreateL3Network validates p and creates an Enabled L3 network on its L2
// network, without IP ranges (add them with AddIpRange) or DNS servers. It
// locks the L2 network's row while it inserts (so that the L2 network's
// delete sees it or it sees no L2 network: ResourceNotFound); the L2
// network is checked there (Check says the same at the edge). A UUID that
// exists already is InvalidArgument.
func CreateL3Network(ctx context.Context, gdb *gorm.DB, p L3Params) (L3NetworkVO, error) {
	if err := p.Validate(); err != nil {
		return L3NetworkVO{}, err
	}
	if p.UUID == "" {
		p.UUID = uid.New()
	}
	var l3 L3NetworkVO
	err := db.Transaction(ctx, gdb.WithContext(ctx), func(tx *gorm.DB) error {
		l2, err := lockL2(tx, p.L2NetworkUUID)
		if err != nil {
			return err
		}
		if err := l3OnL2(p, l2); err != nil {
			return err
		}
		p.ZoneUUID = l2.ZoneUUID
		l3 = l3Row(resource.NewBase(p.UUID, "", ""), p)
		return tx.Omit(clause.Associations).Create(&l3).Error
	})
	var ce *errcode.Error
	switch {
	case err == nil:
		l3.DNSRefs, l3.DNS, l3.IPRanges = []L3NetworkDNSVO{}, []string{}, []IpRangeVO{}
		return l3, nil
	case errors.As(err, &ce):
		return L3NetworkVO{}, err
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return L3NetworkVO{}, errcode.New(errcode.InvalidArgument, "an L3 network with uuid %s already exists", p.UUID)
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return L3NetworkVO{}, errcode.New(errcode.ResourceNotFound, "l2 network %s not found", p.L2NetworkUUID)
	}
	return L3NetworkVO{}, fmt.Errorf("create l3 network %q: %w", p.Name, err)
}

// createL3 is the L3 kind's create: CreateL3Network with the UUID the API
// chose.
func createL3(ctx context.Context, gdb *gorm.DB, uuid string, p L3Params) (L3NetworkVO, error) {
	p.UUID = uuid
	return CreateL3Network(ctx, gdb, p)
}

// l3Row is the row of a new network of validated p, its zone p's.
func l3Row(b resource.Base, p L3Params) L3NetworkVO {
	b.Name, b.Description = p.Name, p.Description
	l3 := L3NetworkVO{Base: b, ZoneUUID: p.ZoneUUID, Type: L3BasicNetwork, State: L3StateEnabled,
		Category: p.Category, System: p.System, IPVersion: p.IPVersion}
	if p.L2NetworkUUID != "" {
		l2 := p.L2NetworkUUID
		l3.L2NetworkUUID = &l2
	}
	if p.DNSDomain != "" {
		d := p.DNSDomain
		l3.DNSDomain = &d
	}
	return l3
}

// GetL3Network reads an L3 network's inventory, with its DNS servers and
// IP ranges; a missing one is ResourceNotFound.
func GetL3Network(ctx context.Context, gdb *gorm.DB, uuid string) (L3NetworkVO, error) {
	return readL3(gdb.WithContext(ctx), uuid)
}

// getL3 reads an L3 network's row alone (without its DNS servers and IP
// ranges: the allocator's read).
func getL3(tx *gorm.DB, uuid string) (L3NetworkVO, error) {
	return readL3(tx.Session(&gorm.Session{SkipHooks: true}), uuid)
}

func readL3(tx *gorm.DB, uuid string) (L3NetworkVO, error) {
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

// DeleteL3Network deletes an L3 network, its IP ranges and its DNS servers
// (their foreign key cascades). It fails with
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
