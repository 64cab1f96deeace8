package network

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/services/resource"
	"mplane/uid"
)

var backends = testenv.Backends

// openDB opens dsn as one management node would and migrates the tables.
func openDB(t testing.TB, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := db.Close(gdb); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	return gdb
}

// newL2 creates an L2NoVlanNetwork on eth0 in zone "zone1" (the tables of
// Migrate have no zones) for L3 networks to be on.
func newL2(t testing.TB, gdb *gorm.DB) string {
	t.Helper()
	l2, err := createNoVlan(context.Background(), gdb, uid.New(), L2NoVlanParams{L2Params{Params: resource.Params{Name: "l2"},
		ZoneUUID: "zone1", PhysicalInterface: "eth0", VSwitchType: VSwitchLinuxBridge}})
	if err != nil {
		t.Fatalf("create an l2 network: %v", err)
	}
	return l2.UUID
}

// newL3 creates an L3 network on a new L2 network with one range made
// from cidr (gateway = the first host).
func newL3(t testing.TB, gdb *gorm.DB, cidr string) (L3NetworkVO, IpRangeVO) {
	t.Helper()
	ctx := context.Background()
	l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "l3-" + cidr, L2NetworkUUID: newL2(t, gdb)})
	if err != nil {
		t.Fatalf("CreateL3Network: %v", err)
	}
	r, err := AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3.UUID, Name: "r", NetworkCIDR: cidr})
	if err != nil {
		t.Fatalf("AddIpRange(%s): %v", cidr, err)
	}
	return l3, r
}

func wantCode(t *testing.T, err error, code errcode.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", code)
	}
	if got := errcode.CodeOf(err); got != code {
		t.Fatalf("error %v has code %s, want %s", err, got, code)
	}
}

func capacity(t *testing.T, gdb *gorm.DB, l3UUID string) IPCapacity {
	t.Helper()
	c, err := Capacity(context.Background(), gdb, l3UUID)
	if err != nil {
		t.Fatalf("Capacity: %v", err)
	}
	return c
}
