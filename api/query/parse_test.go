package query

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"mplane/errcode"
)

var vmSchema = MustSchema(
	Field{Name: "uuid", Column: "uuid", Type: String, Key: true},
	Field{Name: "name", Column: "name", Type: String},
	Field{Name: "zoneUuid", Column: "zone_uuid", Type: String},
	Field{Name: "state", Column: "state", Type: String},
	Field{Name: "cpuNum", Column: "cpu_num", Type: Int},
	Field{Name: "memorySize", Column: "memory_size", Type: Int},
	Field{Name: "ha", Column: "ha", Type: Bool},
	Field{Name: "createDate", Column: "create_date", Type: Time},
	Field{Name: "description", Column: "description", Type: String},
	Field{Name: "vmNics", Type: String},
)

const (
	queryable = "uuid, name, zoneUuid, state, cpuNum, memorySize, ha, createDate, description"
	allFields = queryable + ", vmNics"
)

func TestParseConditions(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		q      string
		op     Op
		field  string
		values []any
	}{
		{"name=vm1", Eq, "name", []any{"vm1"}},
		{"name!=vm1", Neq, "name", []any{"vm1"}},
		{"cpuNum>2", Gt, "cpuNum", []any{int64(2)}},
		{"cpuNum<2", Lt, "cpuNum", []any{int64(2)}},
		{"cpuNum>=2", Gte, "cpuNum", []any{int64(2)}},
		{"cpuNum<=-2", Lte, "cpuNum", []any{int64(-2)}},
		{"name~=web%", Like, "name", []any{"web%"}},
		{"name!~=%web", NotLike, "name", []any{"%web"}},
		{"zoneUuid?=a,b,c", In, "zoneUuid", []any{"a", "b", "c"}},
		{"zoneUuid!?=a", NotIn, "zoneUuid", []any{"a"}},
		{"cpuNum?=1,2", In, "cpuNum", []any{int64(1), int64(2)}},
		{"zoneUuid is null", IsNull, "zoneUuid", nil},
		{"zoneUuid not null", NotNull, "zoneUuid", nil},
		{"zoneUuid  IS  NULL ", IsNull, "zoneUuid", nil},
		{"zoneUuid Not Null", NotNull, "zoneUuid", nil},
		{"ha=true", Eq, "ha", []any{true}},
		{"ha!=FALSE", Neq, "ha", []any{false}},
		// Values holding operator characters: the operator is the longest
		// one right after the field name; the rest is the value.
		{"description=a=b", Eq, "description", []any{"a=b"}},
		{"description==x", Eq, "description", []any{"=x"}},
		{"description!=x!=y", Neq, "description", []any{"x!=y"}},
		{"description>=<=", Gte, "description", []any{"<="}},
		{"description~=%>=%", Like, "description", []any{"%>=%"}},
		{"description!?=a=b,c!?=d", NotIn, "description", []any{"a=b", "c!?=d"}},
		{"description?=", In, "description", []any{""}},
		{"description=", Eq, "description", []any{""}},
		{"description= spaced ", Eq, "description", []any{" spaced "}},
		{"description=is null", Eq, "description", []any{"is null"}},
		{"description<?=", Lt, "description", []any{"?="}},
		{"description>!~=", Gt, "description", []any{"!~="}},
		// Times.
		{"createDate>2024-05-01T10:00:00Z", Gt, "createDate", []any{t0}},
		{"createDate>=2024-05-01T12:00:00+02:00", Gte, "createDate", []any{t0}},
		{"createDate>=2024-05-01T12:00:00 02:00", Gte, "createDate", []any{t0}},
		{"createDate<2024-05-01 10:00:00", Lt, "createDate", []any{t0}},
		{"createDate<2024-05-01 10:00:00.250", Lt, "createDate", []any{t0.Add(250 * time.Millisecond)}},
		{"createDate=2024-05-01", Eq, "createDate", []any{t0.Add(-10 * time.Hour)}},
		{"createDate=1714557600000", Eq, "createDate", []any{t0}},
		{"createDate?=2024-05-01T10:00:00Z,1714557600000", In, "createDate", []any{t0, t0}},
	}
	for _, tc := range tests {
		t.Run(tc.q, func(t *testing.T) {
			q, err := Parse(vmSchema, url.Values{"q": {tc.q}})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(q.Conditions) != 1 {
				t.Fatalf("%d conditions", len(q.Conditions))
			}
			c := q.Conditions[0]
			if c.Op != tc.op || c.Field.Name != tc.field {
				t.Errorf("got %s %q, want %s %q", c.Field.Name, c.Op, tc.field, tc.op)
			}
			if got, want := fmt.Sprintf("%#v", c.Values), fmt.Sprintf("%#v", tc.values); got != want {
				t.Errorf("values\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestParseParameters(t *testing.T) {
	tests := []struct {
		name  string
		query string
		check func(*Query) string
	}{
		{"defaults", "", func(q *Query) string {
			return fmt.Sprint(q.Limit, q.Start, q.Count, q.ReplyWithCount, len(q.Sort), len(q.Fields), len(q.Conditions))
		}},
		{"paging", "limit=5&start=10", func(q *Query) string { return fmt.Sprint(q.Limit, q.Start) }},
		{"limit bounds", "limit=0", func(q *Query) string { return fmt.Sprint(q.Limit) }},
		{"limit max", "limit=10000", func(q *Query) string { return fmt.Sprint(q.Limit) }},
		{"counts", "count=true&replyWithCount=TRUE", func(q *Query) string { return fmt.Sprint(q.Count, q.ReplyWithCount) }},
		{"sort desc", "sort=-cpuNum", sortString},
		{"sort encoded plus", "sort=%2BcreateDate", sortString},
		{"sort raw plus", "sort=+createDate", sortString},
		{"sort bare and several", "sort=name,-cpuNum", sortString},
		{"fields", "fields=uuid,%20name,uuid,vmNics", func(q *Query) string { return strings.Join(q.Fields, "|") }},
		{"several q", "q=name=a&q=cpuNum>1&other=ignored", func(q *Query) string {
			return fmt.Sprintf("%d %s %s", len(q.Conditions), q.Conditions[0].Field.Name, q.Conditions[1].Field.Name)
		}},
	}
	want := map[string]string{
		"defaults":              "1000 0 false false 0 0 0",
		"paging":                "5 10",
		"limit bounds":          "0",
		"limit max":             "10000",
		"counts":                "true true",
		"sort desc":             "-cpuNum",
		"sort encoded plus":     "+createDate",
		"sort raw plus":         "+createDate",
		"sort bare and several": "+name,-cpuNum",
		"fields":                "uuid|name|vmNics",
		"several q":             "2 name cpuNum",
	}
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
			if got := tc.check(q); got != want[tc.name] {
				t.Errorf("got %q, want %q", got, want[tc.name])
			}
		})
	}
}

func sortString(q *Query) string {
	var parts []string
	for _, k := range q.Sort {
		sign := "+"
		if k.Desc {
			sign = "-"
		}
		parts = append(parts, sign+k.Field.Name)
	}
	return strings.Join(parts, ",")
}

func TestParseErrors(t *testing.T) {
	ops := `=, !=, >, <, >=, <=, ~=, !~=, ?=, !?=, "is null", "not null"`
	tests := []struct {
		name    string
		values  url.Values
		details string
	}{
		{"unknown field", url.Values{"q": {"foo=1"}},
			`q "foo=1": unknown field "foo"; queryable fields: ` + queryable},
		{"field case matters", url.Values{"q": {"CpuNum=1"}},
			`q "CpuNum=1": unknown field "CpuNum"; queryable fields: ` + queryable},
		{"projection-only field", url.Values{"q": {"vmNics=x"}},
			`q "vmNics=x": field "vmNics" cannot be queried; queryable fields: ` + queryable},
		{"missing field", url.Values{"q": {"=x"}},
			`q "=x": missing field name; expected field<op>value, e.g. q=name=vm1`},
		{"empty q", url.Values{"q": {""}},
			`q "": missing field name; expected field<op>value, e.g. q=name=vm1`},
		{"no operator", url.Values{"q": {"name"}},
			`q "name": unknown operator after "name"; operators: ` + ops},
		{"tilde alone", url.Values{"q": {"name~x"}},
			`q "name~x": unknown operator after "name"; operators: ` + ops},
		{"question alone", url.Values{"q": {"name?x"}},
			`q "name?x": unknown operator after "name"; operators: ` + ops},
		{"bang alone", url.Values{"q": {"name!x"}},
			`q "name!x": unknown operator after "name"; operators: ` + ops},
		{"space then operator", url.Values{"q": {"name = x"}},
			`q "name = x": unknown operator after "name"; operators: ` + ops},
		{"misspelt null", url.Values{"q": {"name is nul"}},
			`q "name is nul": unknown operator after "name"; operators: ` + ops},
		{"like on int", url.Values{"q": {"cpuNum~=1%"}},
			`q "cpuNum~=1%": operator ~= is not allowed on cpuNum (integer); allowed: =, !=, >, <, >=, <=, ?=, !?=, "is null", "not null"`},
		{"order on bool", url.Values{"q": {"ha>true"}},
			`q "ha>true": operator > is not allowed on ha (boolean); allowed: =, !=, "is null", "not null"`},
		{"int value", url.Values{"q": {"cpuNum=abc"}},
			`q "cpuNum=abc": cpuNum must be an integer, got "abc"`},
		{"int operator typo", url.Values{"q": {"cpuNum=>3"}},
			`q "cpuNum=>3": cpuNum must be an integer, got ">3"`},
		{"int empty", url.Values{"q": {"cpuNum="}},
			`q "cpuNum=": cpuNum must be an integer, got ""`},
		{"int float", url.Values{"q": {"memorySize>1.5"}},
			`q "memorySize>1.5": memorySize must be an integer, got "1.5"`},
		{"int list", url.Values{"q": {"cpuNum?=1,x,3"}},
			`q "cpuNum?=1,x,3": cpuNum must be an integer, got "x"`},
		{"bool value", url.Values{"q": {"ha=yes"}},
			`q "ha=yes": ha must be true or false, got "yes"`},
		{"time value", url.Values{"q": {"createDate>yesterday"}},
			`q "createDate>yesterday": createDate must be a time (RFC 3339 like 2024-05-01T10:00:00Z, 2024-05-01 10:00:00 (UTC), 2024-05-01 (UTC), or Unix milliseconds), got "yesterday"`},
		{"list too long", url.Values{"q": {"name?=" + strings.Repeat("a,", MaxListValues) + "a"}},
			fmt.Sprintf(`q "name?=%sa": at most 1000 values in a list, got 1001`, strings.Repeat("a,", MaxListValues))},
		{"too many q", url.Values{"q": manyQ(MaxConditions + 1)}, `too many q parameters: 65; at most 64`},
		{"limit word", url.Values{"limit": {"ten"}}, `limit must be an integer from 0 to 10000, got "ten"`},
		{"limit negative", url.Values{"limit": {"-1"}}, `limit must be an integer from 0 to 10000, got "-1"`},
		{"limit too big", url.Values{"limit": {"10001"}}, `limit must be an integer from 0 to 10000, got "10001"`},
		{"limit twice", url.Values{"limit": {"1", "2"}}, `limit may be given once, got 2 values`},
		{"start word", url.Values{"start": {"x"}}, `start must be an integer >= 0, got "x"`},
		{"start negative", url.Values{"start": {"-5"}}, `start must be an integer >= 0, got "-5"`},
		{"count", url.Values{"count": {"1"}}, `count must be true or false, got "1"`},
		{"replyWithCount", url.Values{"replyWithCount": {"yes"}}, `replyWithCount must be true or false, got "yes"`},
		{"sort unknown", url.Values{"sort": {"-foo"}}, `sort: unknown field "foo"; sortable fields: ` + queryable},
		{"sort projection-only", url.Values{"sort": {"+vmNics"}}, `sort: unknown field "vmNics"; sortable fields: ` + queryable},
		{"sort empty", url.Values{"sort": {""}}, `sort must be +field or -field (comma-separated for several keys), got ""`},
		{"sort sign only", url.Values{"sort": {"-"}}, `sort must be +field or -field (comma-separated for several keys), got "-"`},
		{"sort twice", url.Values{"sort": {"name,-name"}}, `sort: field "name" given twice`},
		{"fields unknown", url.Values{"fields": {"uuid,nmae"}}, `fields: unknown field "nmae"; fields: ` + allFields},
		{"fields empty item", url.Values{"fields": {"uuid,,name"}}, `fields must be a comma-separated list of field names, got "uuid,,name"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(vmSchema, tc.values)
			var e *errcode.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want *errcode.Error", err)
			}
			if e.Code != errcode.InvalidArgument || e.Code.HTTPStatus() != 400 {
				t.Errorf("code %s", e.Code)
			}
			if e.Details != tc.details {
				t.Errorf("details\n got %s\nwant %s", e.Details, tc.details)
			}
		})
	}
}

func manyQ(n int) []string {
	qs := make([]string, n)
	for i := range qs {
		qs[i] = "name=x"
	}
	return qs
}

func TestNewSchemaRejects(t *testing.T) {
	tests := []struct {
		name   string
		fields []Field
		err    string
	}{
		{"bad name", []Field{{Name: "1x", Column: "x", Type: String}}, `field name "1x"`},
		{"duplicate", []Field{{Name: "x", Column: "x", Type: String}, {Name: "x", Column: "y", Type: String}}, `field "x" listed twice`},
		{"injection column", []Field{{Name: "x", Column: "x; DROP TABLE t", Type: String}}, `column "x; DROP TABLE t" is not a plain identifier`},
		{"no type", []Field{{Name: "x", Column: "x"}}, `invalid type Type(0)`},
		{"two keys", []Field{{Name: "a", Column: "a", Type: String, Key: true}, {Name: "b", Column: "b", Type: String, Key: true}}, `both Key`},
		{"key without column", []Field{{Name: "a", Type: String, Key: true}}, `key field "a" needs a column`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSchema(tc.fields...)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want it to contain %q", err, tc.err)
			}
		})
	}
	if _, err := NewSchema(Field{Name: "vm.name", Column: "vm_instances.name", Type: String}); err != nil {
		t.Errorf("table-qualified column refused: %v", err)
	}
}

func TestProject(t *testing.T) {
	type inv struct {
		UUID string `json:"uuid"`
		Name string `json:"name"`
		CPU  int    `json:"cpuNum"`
	}
	tests := []struct {
		name   string
		v      any
		fields []string
		want   string
	}{
		{"all", []inv{{"u1", "a", 1}}, nil, `[{"uuid":"u1","name":"a","cpuNum":1}]`},
		{"some", []inv{{"u1", "a", 1}, {"u2", "b", 2}}, []string{"uuid", "cpuNum"}, `[{"cpuNum":1,"uuid":"u1"},{"cpuNum":2,"uuid":"u2"}]`},
		{"missing member skipped", []map[string]any{{"uuid": "u1"}}, []string{"uuid", "name"}, `[{"uuid":"u1"}]`},
		{"single object", inv{"u1", "a", 1}, []string{"name"}, `{"name":"a"}`},
		{"empty", []inv{}, []string{"name"}, `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Project(tc.v, tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := Project([]int{1}, []string{"uuid"}); err == nil || !strings.Contains(err.Error(), "a number is not a JSON object") {
		t.Errorf("projecting numbers: %v", err)
	}
}

func TestReply(t *testing.T) {
	type inv struct {
		UUID string `json:"uuid"`
		Name string `json:"name"`
	}
	rows := []inv{{"u1", "a"}}
	tests := []struct {
		query string
		rows  any
		want  string
	}{
		{"", rows, `{"inventories":[{"uuid":"u1","name":"a"}]}`},
		{"replyWithCount=true", rows, `{"inventories":[{"uuid":"u1","name":"a"}],"total":7}`},
		{"count=true", nil, `{"total":7}`},
		{"replyWithCount=true", []inv(nil), `{"inventories":[],"total":7}`},
		{"", []inv{}, `{"inventories":[]}`},
		{"fields=name", rows, `{"inventories":[{"name":"a"}]}`},
		{"count=true&replyWithCount=true", rows, `{"total":7}`},
	}
	for _, tc := range tests {
		v, _ := url.ParseQuery(tc.query)
		q, err := Parse(vmSchema, v)
		if err != nil {
			t.Fatal(err)
		}
		r, err := q.Reply(tc.rows, 7)
		if err != nil {
			t.Fatal(err)
		}
		got := mustJSON(t, r)
		if got != tc.want {
			t.Errorf("%q: got %s, want %s", tc.query, got, tc.want)
		}
	}
}

func TestParseRawRefusesWhatURLQueryDrops(t *testing.T) {
	// url.URL.Query drops "q=name=x;" silently: the query would return
	// every row. ParseRaw refuses it.
	if vs, _ := url.ParseQuery("q=name=x;"); len(vs["q"]) != 0 {
		t.Fatalf("url.ParseQuery kept %v: the premise changed", vs)
	}
	_, err := ParseRaw(vmSchema, "q=name=x;")
	if e := errcode.From(err); err == nil || e.Code != errcode.InvalidArgument || !strings.Contains(e.Details, "holds a ';'") {
		t.Fatalf("ParseRaw of a ';': %v, want a 400 naming it", err)
	}
	q, err := ParseRaw(vmSchema, "q=name=x%3B")
	if err != nil || len(q.Conditions) != 1 || q.Conditions[0].Values[0] != "x;" {
		t.Fatalf("ParseRaw of an encoded ';': %+v %v", q, err)
	}
	if _, err := ParseRaw(vmSchema, "q=%zz"); errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Fatalf("ParseRaw of a bad escape: %v", err)
	}
}

func TestParseBoundsTheValuesOfAQuery(t *testing.T) {
	list := strings.TrimSuffix(strings.Repeat("a,", MaxListValues), ",")
	qs := []string{"name?=" + list, "state?=" + list}
	if _, err := Parse(vmSchema, url.Values{"q": qs}); err != nil {
		t.Fatalf("2 lists of %d: %v", MaxListValues, err)
	}
	_, err := Parse(vmSchema, url.Values{"q": append(qs, "zoneUuid?=a")})
	if e := errcode.From(err); err == nil || e.Code != errcode.InvalidArgument || !strings.Contains(e.Details, fmt.Sprintf("more than %d in all", MaxValues)) {
		t.Fatalf("past %d values: %v, want a 400", MaxValues, err)
	}
}
