package tenancy_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/tenancy"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

type boxVO struct {
	UUID  string `gorm:"column:uuid;primaryKey;size:32"`
	Name  string `gorm:"column:name;size:64"`
	Color string `gorm:"column:color;size:16"`
}

func (boxVO) TableName() string { return "boxes" }

type lidVO struct {
	UUID    string `gorm:"column:uuid;primaryKey;size:32"`
	BoxUUID string `gorm:"column:box_uuid;size:32"`
}

func (lidVO) TableName() string { return "lids" }

func (l *lidVO) TenancyRef() (uuid, parent string) { return l.UUID, l.BoxUUID }

type paintVO struct {
	UUID string `gorm:"column:uuid;primaryKey;size:32"`
}

func (paintVO) TableName() string { return "paints" }

const (
	alice = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	bob   = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
)

func open(t *testing.T, dsn string) (*gorm.DB, *tenancy.Guard) {
	t.Helper()
	ctx := context.Background()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := tenancy.Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	if err := gdb.AutoMigrate(&boxVO{}, &lidVO{}, &paintVO{}); err != nil {
		t.Fatal(err)
	}
	g, err := tenancy.Install(gdb, []tenancy.Table{
		{Name: "boxes", Visibility: tenancy.OwnerOnly},
		{Name: "lids", Visibility: tenancy.OwnerOnly, ParentColumn: "box_uuid"},
		{Name: "paints", Visibility: tenancy.OwnerOrShared},
	})
	if err != nil {
		t.Fatal(err)
	}
	return gdb, g
}

func backends(t *testing.T) map[string]string {
	return map[string]string{"sqlite": testenv.SQLiteDSN(t), "mysql": testenv.MySQLDSN(t)}
}

func uuids(t *testing.T, tx *gorm.DB) []string {
	t.Helper()
	var out []string
	if err := tx.Pluck("uuid", &out).Error; err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func same(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestScopedQueriesSeeOnlyWhatTheAccountMay(t *testing.T) {
	for name, dsn := range backends(t) {
		t.Run(name, func(t *testing.T) {
			gdb, _ := open(t, dsn)
			ctx := context.Background()
			mine, theirs, ownerless := "11111111111111111111111111111111", "22222222222222222222222222222222", "33333333333333333333333333333333"
			for _, b := range []boxVO{{UUID: mine, Name: "x", Color: "red"}, {UUID: theirs, Name: "x", Color: "blue"}, {UUID: ownerless, Name: "x", Color: "red"}} {
				if err := gdb.Create(&b).Error; err != nil {
					t.Fatal(err)
				}
			}
			if err := tenancy.Claim(ctx, gdb, "boxes", mine, alice); err != nil {
				t.Fatal(err)
			}
			if err := tenancy.Claim(ctx, gdb, "boxes", theirs, bob); err != nil {
				t.Fatal(err)
			}
			as := gdb.WithContext(tenancy.Scope(ctx, alice))
			if got := uuids(t, as.Model(&boxVO{})); !same(got, []string{mine}) {
				t.Errorf("alice's boxes %v, want her one", got)
			}
			// An OR in the query's own condition does not escape the scope.
			if got := uuids(t, as.Model(&boxVO{}).Where("color = ?", "blue").Or("name = ?", "x")); !same(got, []string{mine}) {
				t.Errorf("alice's blue-or-x boxes %v, want her one", got)
			}
			var n int64
			if err := as.Model(&boxVO{}).Where("uuid = ?", theirs).Count(&n).Error; err != nil || n != 0 {
				t.Errorf("alice counts bob's box: %d %v", n, err)
			}
			var b boxVO
			if err := as.Where("uuid = ?", theirs).Take(&b).Error; err != gorm.ErrRecordNotFound {
				t.Errorf("alice takes bob's box: %+v %v", b, err)
			}
			var rows []struct{ UUID string }
			if err := as.Table("boxes").Select("uuid").Scan(&rows).Error; err != nil || len(rows) != 1 || rows[0].UUID != mine {
				t.Errorf("alice's scan of boxes: %+v %v", rows, err)
			}
			// Unscoped (the owner's work) and admin see all.
			if got := uuids(t, gdb.WithContext(ctx).Model(&boxVO{})); len(got) != 3 {
				t.Errorf("unscoped boxes %v, want all 3", got)
			}
			if got := uuids(t, gdb.WithContext(tenancy.Unscoped(tenancy.Scope(ctx, alice))).Model(&boxVO{})); len(got) != 3 {
				t.Errorf("unscoped again: %v, want all 3", got)
			}
		})
	}
}

func TestSharedRows(t *testing.T) {
	for name, dsn := range backends(t) {
		t.Run(name, func(t *testing.T) {
			gdb, g := open(t, dsn)
			ctx := context.Background()
			toBob, public, private := "44444444444444444444444444444444", "55555555555555555555555555555555", "66666666666666666666666666666666"
			for _, u := range []string{toBob, public, private} {
				if err := gdb.Create(&paintVO{UUID: u}).Error; err != nil {
					t.Fatal(err)
				}
				if err := tenancy.Claim(ctx, gdb, "paints", u, alice); err != nil {
					t.Fatal(err)
				}
			}
			if err := tenancy.Share(ctx, gdb, toBob, alice, "paints", []string{bob}); err != nil {
				t.Fatal(err)
			}
			if err := tenancy.Share(ctx, gdb, public, alice, "paints", []string{""}); err != nil {
				t.Fatal(err)
			}
			want := []string{toBob, public}
			sort.Strings(want)
			if got := uuids(t, gdb.WithContext(tenancy.Scope(ctx, bob)).Model(&paintVO{})); !same(got, want) {
				t.Errorf("bob's paints %v, want %v", got, want)
			}
			carol := "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
			if got := uuids(t, gdb.WithContext(tenancy.Scope(ctx, carol)).Model(&paintVO{})); !same(got, []string{public}) {
				t.Errorf("carol's paints %v, want the public one", got)
			}
			for u, want := range map[string]tenancy.Relation{toBob: tenancy.Receiver, public: tenancy.Receiver, private: tenancy.Stranger} {
				if rel, err := tenancy.RelationOf(ctx, gdb, u, bob); err != nil || rel != want {
					t.Errorf("bob to %s: %v %v, want %v", u, rel, err, want)
				}
			}
			if rel, _ := tenancy.RelationOf(ctx, gdb, private, alice); rel != tenancy.Owner {
				t.Errorf("alice to her paint: %v", rel)
			}
			if err := tenancy.Revoke(ctx, gdb, toBob, []string{bob}, false); err != nil {
				t.Fatal(err)
			}
			if got := uuids(t, gdb.WithContext(tenancy.Scope(ctx, bob)).Model(&paintVO{})); !same(got, []string{public}) {
				t.Errorf("bob's paints after the revoke %v", got)
			}
			if !g.Shareable("paints") || g.Shareable("boxes") {
				t.Error("Shareable")
			}
			if table, err := g.Locate(ctx, gdb, private); err != nil || table != "paints" {
				t.Errorf("Locate: %q %v", table, err)
			}
		})
	}
}

func TestClaim(t *testing.T) {
	for name, dsn := range backends(t) {
		t.Run(name, func(t *testing.T) {
			gdb, _ := open(t, dsn)
			ctx := context.Background()
			u := "77777777777777777777777777777777"
			if err := tenancy.Claim(ctx, gdb, "boxes", u, alice); err != nil {
				t.Fatal(err)
			}
			if err := tenancy.Claim(ctx, gdb, "boxes", u, alice); err != nil {
				t.Fatalf("alice claims her own again: %v", err)
			}
			if err := tenancy.Claim(ctx, gdb, "boxes", u, bob); errcode.CodeOf(err) != errcode.InvalidArgument {
				t.Fatalf("bob claims alice's: %v, want InvalidArgument", err)
			}
		})
	}
}

func TestChildrenInheritTheirParentsOwner(t *testing.T) {
	for name, dsn := range backends(t) {
		t.Run(name, func(t *testing.T) {
			gdb, g := open(t, dsn)
			ctx := context.Background()
			box, orphanBox := "88888888888888888888888888888888", "99999999999999999999999999999999"
			if err := tenancy.Claim(ctx, gdb, "boxes", box, alice); err != nil {
				t.Fatal(err)
			}
			one := lidVO{UUID: "10000000000000000000000000000001", BoxUUID: box}
			if err := gdb.Create(&one).Error; err != nil {
				t.Fatal(err)
			}
			batch := []lidVO{{UUID: "10000000000000000000000000000002", BoxUUID: box}, {UUID: "10000000000000000000000000000003", BoxUUID: orphanBox}}
			if err := gdb.Transaction(func(tx *gorm.DB) error { return tx.Create(&batch).Error }); err != nil {
				t.Fatal(err)
			}
			as := gdb.WithContext(tenancy.Scope(ctx, alice))
			want := []string{one.UUID, batch[0].UUID}
			if got := uuids(t, as.Model(&lidVO{})); !same(got, want) {
				t.Errorf("alice's lids %v, want %v", got, want)
			}
			// A lid a crash left without a record: the sweeper gives it its
			// box's owner once the box has one.
			if err := gdb.Where("resource_uuid = ?", batch[0].UUID).Delete(&tenancy.RefVO{}).Error; err != nil {
				t.Fatal(err)
			}
			if err := tenancy.Claim(ctx, gdb, "boxes", orphanBox, bob); err != nil {
				t.Fatal(err)
			}
			made, _, err := g.Sweep(ctx, gdb, time.Hour)
			if err != nil || made != 2 {
				t.Fatalf("sweep made %d records (%v), want 2", made, err)
			}
			if got := uuids(t, as.Model(&lidVO{})); !same(got, want) {
				t.Errorf("alice's lids after the sweep %v, want %v", got, want)
			}
			if got := uuids(t, gdb.WithContext(tenancy.Scope(ctx, bob)).Model(&lidVO{})); !same(got, []string{batch[1].UUID}) {
				t.Errorf("bob's lids after the sweep %v", got)
			}
			owned, err := g.Owned(ctx, gdb, alice)
			if err != nil || owned["lids"] != 2 || owned["boxes"] != 0 {
				t.Errorf("alice owns %v (%v): her box has no row, her lids do", owned, err)
			}
		})
	}
}

func TestSweepForgetsTheGone(t *testing.T) {
	for name, dsn := range backends(t) {
		t.Run(name, func(t *testing.T) {
			gdb, g := open(t, dsn)
			ctx := context.Background()
			kept, gone, young := "20000000000000000000000000000001", "20000000000000000000000000000002", "20000000000000000000000000000003"
			for _, u := range []string{kept, gone, young} {
				if err := tenancy.Claim(ctx, gdb, "paints", u, alice); err != nil {
					t.Fatal(err)
				}
			}
			if err := gdb.Create(&paintVO{UUID: kept}).Error; err != nil {
				t.Fatal(err)
			}
			if err := tenancy.Share(ctx, gdb, gone, alice, "paints", []string{""}); err != nil {
				t.Fatal(err)
			}
			old := time.Now().UTC().Add(-2 * time.Hour)
			if err := gdb.Model(&tenancy.RefVO{}).Where("resource_uuid IN ?", []string{kept, gone}).Update("create_date", old).Error; err != nil {
				t.Fatal(err)
			}
			_, forgot, err := g.Sweep(ctx, gdb, time.Hour)
			if err != nil || forgot != 1 {
				t.Fatalf("sweep forgot %d (%v), want the one gone", forgot, err)
			}
			var left []string
			gdb.Model(&tenancy.RefVO{}).Order("resource_uuid").Pluck("resource_uuid", &left)
			if !same(left, []string{kept, young}) {
				t.Errorf("records left %v, want the kept and the young (a create in progress)", left)
			}
			var shares int64
			gdb.Model(&tenancy.ShareVO{}).Count(&shares)
			if shares != 0 {
				t.Errorf("%d sharings of a gone resource left", shares)
			}
			if err := tenancy.Forget(ctx, gdb, alice); err != nil {
				t.Fatal(err)
			}
			gdb.Model(&tenancy.RefVO{}).Count(&shares)
			if shares != 0 {
				t.Errorf("%d records of a forgotten account", shares)
			}
		})
	}
}
