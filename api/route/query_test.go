package route_test

import (
	"context"
	"net/url"
	"testing"

	"mplane/api/query"
	"mplane/api/route"
	"mplane/errcode"
)

type boxVO struct {
	UUID  string   `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name  string   `gorm:"column:name;size:64" json:"name"`
	Items []itemVO `gorm:"foreignKey:BoxUUID;references:UUID" json:"items"`
}

func (boxVO) TableName() string { return "routetest_boxes" }

type itemVO struct {
	UUID    string `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	BoxUUID string `gorm:"column:box_uuid;size:32;index" json:"boxUuid"`
	Name    string `gorm:"column:name;size:64" json:"name"`
}

func (itemVO) TableName() string { return "routetest_items" }

// missingVO has no table.
type missingVO struct {
	UUID string `gorm:"column:uuid;primaryKey" json:"uuid"`
}

func (missingVO) TableName() string { return "routetest_missing" }

func TestQueryOf(t *testing.T) {
	ctx := context.Background()
	gdb := openDB(t)
	if err := gdb.AutoMigrate(&boxVO{}, &itemVO{}); err != nil {
		t.Fatal(err)
	}
	boxes := []boxVO{{UUID: "b1", Name: "one"}, {UUID: "b2", Name: "two"}, {UUID: "b3", Name: "three"}}
	if err := gdb.Omit("Items").Create(&boxes).Error; err != nil {
		t.Fatal(err)
	}
	items := []itemVO{{UUID: "i1", BoxUUID: "b1", Name: "x"}, {UUID: "i2", BoxUUID: "b1", Name: "y"}, {UUID: "i3", BoxUUID: "b2", Name: "z"}}
	if err := gdb.Create(&items).Error; err != nil {
		t.Fatal(err)
	}

	preloaded := route.QueryOf[boxVO](route.Preload("Items"))
	plain := route.QueryOf[boxVO]()
	// A view of some rows: b1 and b3, the names starting with neither t
	// nor w, and two conditions ANDed.
	view := route.QueryOf[boxVO](route.Where("name <> ?", "two"), route.Where("name NOT LIKE ?", "w%"), route.Preload("Items"))
	if !preloaded.Declared() || !plain.Declared() || (route.Query{}).Declared() {
		t.Fatalf("Declared: QueryOf %v %v, zero Query %v", preloaded.Declared(), plain.Declared(), (route.Query{}).Declared())
	}
	if f, ok := preloaded.Schema().Field("items"); !ok || f.Column != "" {
		t.Fatalf("schema field items: %+v %v, want a fields=-only field", f, ok)
	}

	cases := []struct {
		name      string
		q         route.Query
		params    url.Values
		uuid      string
		wantUUIDs []string
		wantItems []int // len(Items) of each row
		wantTotal int64
	}{
		{"all, preloaded", preloaded, url.Values{"sort": {"+name"}}, "", []string{"b1", "b3", "b2"}, []int{2, 0, 1}, 0},
		{"all, not preloaded", plain, url.Values{"sort": {"+name"}}, "", []string{"b1", "b3", "b2"}, []int{0, 0, 0}, 0},
		{"one, preloaded", preloaded, nil, "b1", []string{"b1"}, []int{2}, 0},
		{"one missing", preloaded, nil, "b9", nil, nil, 0},
		{"filtered with a total", preloaded, url.Values{"q": {"name~=t%"}, "replyWithCount": {"true"}, "limit": {"1"}, "sort": {"-name"}},
			"", []string{"b2"}, []int{1}, 2},
		{"a view", view, url.Values{"sort": {"+name"}, "replyWithCount": {"true"}}, "", []string{"b1", "b3"}, []int{2, 0}, 2},
		{"a view and q", view, url.Values{"q": {"name~=t%"}, "count": {"true"}}, "", nil, nil, 1},
		{"one outside the view", view, nil, "b2", nil, nil, 0},
		{"one in the view", view, nil, "b1", []string{"b1"}, []int{2}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pq, err := query.Parse(tc.q.Schema(), tc.params)
			if err != nil {
				t.Fatal(err)
			}
			rows, total, n, err := tc.q.Find(ctx, gdb, pq, tc.uuid)
			if err != nil {
				t.Fatal(err)
			}
			got := rows.([]boxVO)
			if n != len(got) || n != len(tc.wantUUIDs) || total != tc.wantTotal {
				t.Fatalf("%d rows (n %d, total %d), want %d (total %d)", len(got), n, total, len(tc.wantUUIDs), tc.wantTotal)
			}
			for i, b := range got {
				if b.UUID != tc.wantUUIDs[i] || len(b.Items) != tc.wantItems[i] {
					t.Errorf("row %d: %s with %d items, want %s with %d", i, b.UUID, len(b.Items), tc.wantUUIDs[i], tc.wantItems[i])
				}
			}
		})
	}

	t.Run("exists", func(t *testing.T) {
		if err := plain.Exists(ctx, gdb, "box", "b2"); err != nil {
			t.Errorf("Exists b2: %v", err)
		}
		wantCode(t, plain.Exists(ctx, gdb, "box", "b9"), errcode.ResourceNotFound, "box b9 not found")
		if err := view.Exists(ctx, gdb, "box", "b3"); err != nil {
			t.Errorf("Exists b3 in the view: %v", err)
		}
		wantCode(t, view.Exists(ctx, gdb, "box", "b2"), errcode.ResourceNotFound, "box b2 not found")
		wantCode(t, route.QueryOf[missingVO]().Exists(ctx, gdb, "thing", "m1"), errcode.Internal, "look up thing m1")
	})
	t.Run("find without a table", func(t *testing.T) {
		q := route.QueryOf[missingVO]()
		pq, err := query.Parse(q.Schema(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := q.Find(ctx, gdb, pq, ""); err == nil {
			t.Error("Find on a missing table: no error")
		}
	})
}
