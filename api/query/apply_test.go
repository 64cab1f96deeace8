package query

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/internal/testenv"
)

// testVM is a small table shaped like a VM inventory.
type testVM struct {
	UUID        string  `gorm:"primaryKey;size:32"`
	Name        string  `gorm:"size:255;not null"`
	ZoneUUID    *string `gorm:"size:32"`
	State       string  `gorm:"size:32;not null"`
	CPUNum      int64   `gorm:"not null"`
	MemorySize  int64   `gorm:"not null"`
	HA          bool    `gorm:"column:ha;not null"`
	CreateDate  time.Time
	Description *string `gorm:"size:255"`
}

func (testVM) TableName() string { return "test_vms" }

var backends = testenv.Backends

func ptr(s string) *string { return &s }

var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func seed(t *testing.T, gdb *gorm.DB) {
	t.Helper()
	if err := gdb.AutoMigrate(&testVM{}); err != nil {
		t.Fatal(err)
	}
	rows := []testVM{
		{UUID: "vm1", Name: "web-1", ZoneUUID: ptr("z1"), State: "Running", CPUNum: 1, MemorySize: 1024, HA: true, CreateDate: t0},
		{UUID: "vm2", Name: "web_2", ZoneUUID: ptr("z1"), State: "Stopped", CPUNum: 2, MemorySize: 2048, CreateDate: t0.Add(time.Hour)},
		{UUID: "vm3", Name: "db-1", ZoneUUID: ptr("z2"), State: "Running", CPUNum: 4, MemorySize: 4096, HA: true, CreateDate: t0.Add(2 * time.Hour)},
		{UUID: "vm4", Name: "db%1", State: "Running", CPUNum: 8, MemorySize: 8192, CreateDate: t0.Add(3 * time.Hour), Description: ptr("a=b")},
		{UUID: "vm5", Name: "cache", ZoneUUID: ptr("z2"), State: "Stopped", CPUNum: 2, MemorySize: 1024, CreateDate: t0.Add(4*time.Hour + 250*time.Millisecond), Description: ptr("x' OR '1'='1")},
	}
	if err := gdb.Create(&rows).Error; err != nil {
		t.Fatal(err)
	}
}

func openDB(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	return gdb
}

func TestFindOnBackends(t *testing.T) {
	tests := []struct {
		name  string
		query string
		uuids string // in answer order
		total int64  // checked when count or replyWithCount
	}{
		{"all, ordered by key", "", "vm1 vm2 vm3 vm4 vm5", 0},
		{"eq", "q=name=web-1", "vm1", 0},
		{"neq", "q=name!=web-1", "vm2 vm3 vm4 vm5", 0},
		{"gt", "q=cpuNum>2", "vm3 vm4", 0},
		{"gte", "q=cpuNum>=2", "vm2 vm3 vm4 vm5", 0},
		{"lt", "q=cpuNum<2", "vm1", 0},
		{"lte", "q=memorySize<=2048", "vm1 vm2 vm5", 0},
		{"like prefix", "q=name~=web%25", "vm1 vm2", 0},
		{"like underscore is literal", "q=name~=web_%25", "vm2", 0},
		{"like percent wildcard", "q=name~=db%251", "vm3 vm4", 0},
		{"like suffix", "q=name~=%251", "vm1 vm3 vm4", 0},
		{"not like", "q=name!~=web%25", "vm3 vm4 vm5", 0},
		{"in", "q=zoneUuid?=z1,z2", "vm1 vm2 vm3 vm5", 0},
		{"in ints", "q=cpuNum?=1,8", "vm1 vm4", 0},
		{"in one", "q=zoneUuid?=z2", "vm3 vm5", 0},
		{"not in excludes null", "q=zoneUuid!?=z1", "vm3 vm5", 0},
		{"not in several", "q=cpuNum!?=1,2", "vm3 vm4", 0},
		{"is null", "q=zoneUuid+is+null", "vm4", 0},
		{"not null", "q=zoneUuid%20not%20null", "vm1 vm2 vm3 vm5", 0},
		{"bool true", "q=ha=true", "vm1 vm3", 0},
		{"bool false", "q=ha!=true", "vm2 vm4 vm5", 0},
		{"time gte rfc3339", "q=createDate>=2024-05-01T12:00:00Z", "vm3 vm4 vm5", 0},
		{"time eq with zone", "q=createDate=2024-05-01T13:00:00%2B02:00", "vm2", 0},
		{"time eq unix ms", "q=createDate=1714557600000", "vm1", 0},
		{"time millisecond precision", "q=createDate>=2024-05-01 14:00:00.250", "vm5", 0},
		{"time millisecond precision strict", "q=createDate>2024-05-01 14:00:00.250", "", 0},
		{"time in", "q=createDate?=2024-05-01T10:00:00Z,2024-05-01T11:00:00Z", "vm1 vm2", 0},
		{"value with equals", "q=description=a=b", "vm4", 0},
		{"injection is a value", "q=description=x' OR '1'='1", "vm5", 0},
		{"injection finds nothing", "q=name=x' OR '1'='1", "", 0},
		{"and", "q=state=Running&q=cpuNum>1", "vm3 vm4", 0},
		{"sort desc, key breaks ties", "sort=-cpuNum", "vm4 vm3 vm2 vm5 vm1", 0},
		{"sort two keys", "sort=%2BmemorySize,-cpuNum", "vm5 vm1 vm2 vm3 vm4", 0},
		{"sort by time", "sort=-createDate", "vm5 vm4 vm3 vm2 vm1", 0},
		{"page", "sort=-cpuNum&limit=2&start=1", "vm3 vm2", 0},
		{"page past end", "limit=2&start=10", "", 0},
		{"limit zero", "limit=0", "", 0},
		{"start only", "start=3", "vm4 vm5", 0},
		{"count", "count=true&q=cpuNum>1", "", 4},
		{"count ignores page", "count=true&limit=1&start=1", "", 5},
		{"replyWithCount", "replyWithCount=true&limit=1&sort=-memorySize", "vm4", 5},
		{"replyWithCount filtered", "replyWithCount=true&q=state=Stopped", "vm2 vm5", 2},
	}
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			seed(t, gdb)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					v, err := url.ParseQuery(tc.query)
					if err != nil {
						t.Fatal(err)
					}
					q, err := Parse(vmSchema, v)
					if err != nil {
						t.Fatalf("Parse(%s): %v", tc.query, err)
					}
					rows, total, err := Find[testVM](context.Background(), gdb, q)
					if err != nil {
						t.Fatalf("Find: %v", err)
					}
					var got []string
					for _, r := range rows {
						got = append(got, r.UUID)
					}
					if strings.Join(got, " ") != tc.uuids {
						t.Errorf("rows %v, want %s", got, tc.uuids)
					}
					if (q.Count || q.ReplyWithCount) && total != tc.total {
						t.Errorf("total %d, want %d", total, tc.total)
					}
					if q.Count && rows != nil {
						t.Errorf("count=true read rows: %v", rows)
					}
				})
			}
		})
	}
}

// TestFindKeepsCallerScope checks that a handler's own conditions (a
// tenant's filter) are kept and that one base *gorm.DB serves many queries.
func TestFindKeepsCallerScope(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			seed(t, gdb)
			scoped := gdb.Model(&testVM{}).Where("state = ?", "Running")
			for range 2 {
				q, err := Parse(vmSchema, url.Values{"q": {"cpuNum>1"}, "replyWithCount": {"true"}})
				if err != nil {
					t.Fatal(err)
				}
				rows, total, err := Find[testVM](context.Background(), scoped, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) != 2 || total != 2 {
					t.Fatalf("rows %d total %d, want 2 and 2", len(rows), total)
				}
			}
		})
	}
}

// TestApplyBindsValues checks the SQL shape: values are placeholders, never
// text in the statement (GORM inlines LIMIT and OFFSET, integers that Parse
// checked).
func TestApplyBindsValues(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	seed(t, gdb)
	v := url.Values{"q": {"name~=a_b!%", "description=x' OR '1'='1", "cpuNum?=1,2", "zoneUuid is null"}, "sort": {"-name"}, "limit": {"3"}, "start": {"4"}}
	q, err := Parse(vmSchema, v)
	if err != nil {
		t.Fatal(err)
	}
	stmt := q.Apply(gdb.Session(&gorm.Session{DryRun: true})).Find(&[]testVM{}).Statement
	sql := stmt.SQL.String()
	want := "SELECT * FROM `test_vms` WHERE `name` LIKE ? ESCAPE '!' AND `description` = ? AND `cpu_num` IN (?,?) AND `zone_uuid` IS NULL ORDER BY `name` DESC,`uuid` LIMIT 3 OFFSET 4"
	if sql != want {
		t.Errorf("SQL\n got %s\nwant %s", sql, want)
	}
	if strings.Contains(sql, "'1'") || strings.Contains(sql, "a_b") {
		t.Error("a value reached the SQL text")
	}
	gotVars := mustJSON(t, stmt.Vars)
	if wantVars := `["a!_b!!%","x' OR '1'='1",1,2]`; gotVars != wantVars {
		t.Errorf("vars %s, want %s", gotVars, wantVars)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
