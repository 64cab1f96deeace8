package query

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"mplane/errcode"
)

// FuzzParse parses fuzzed query strings of GET /v1/<resources> against
// the schemas of the package's tests (vmSchema, written by hand, and
// testModel's, derived by SchemaOf). Its seeds run as unit tests in go
// test; `make fuzz` runs it for FUZZTIME.
//
// Properties checked:
//
//   - Parse never panics;
//   - an error is an *errcode.Error InvalidArgument (HTTP 400), with no
//     query;
//   - a query obeys what Parse promises: limit in [0, MaxLimit], start >= 0,
//     at most MaxConditions conditions, each on a queryable field of the
//     schema with an operator its type allows and values of the Go type of
//     the field's Type (none for the null tests, at most MaxListValues for
//     lists, one otherwise); sort keys and fields= names from the schema,
//     sort keys once each;
//   - what applies a parsed query does not panic either: building the
//     conditions' SQL expressions, and projecting inventories on fields=.
func FuzzParse(f *testing.F) {
	seeds := []struct{ raw, q string }{
		{"", ""},
		{"q=name=vm1", ""},
		{"q=name=vm1&q=cpuNum>2&sort=-createDate&fields=uuid,name&start=10&limit=20&count=false&replyWithCount=true", ""},
		{"q=zoneUuid?=a,b,c&q=state!?=Stopped&q=name~=web%25&q=description!~=%25x", ""},
		{"q=zoneUuid+is+null&q=name%20NOT%20NULL", ""},
		{"q=createDate>=2024-05-01T12:00:00+02:00&q=createDate<2024-05-01+10:00:00.250", ""},
		{"q=createDate=1714557600000&sort=+name,-uuid", ""},
		{"sort=%2BcreateDate&fields=uuid,%20name,uuid,vmNics", ""},
		{"q=totalCpuCapacity>=2&q=vlan?=1,2&q=parentUuid+is+null&sort=-createDate", ""},
		{"q=enabled=true&fields=children,virtual", ""},
		// Mistakes.
		{"q=foo=1", ""},
		{"q=vmNics=x", ""},
		{"q==x", ""},
		{"q=name", ""},
		{"q=cpuNum~=1%25", ""},
		{"q=ha>true", ""},
		{"q=cpuNum=99999999999999999999", ""},
		{"q=createDate=2024-13-45", ""},
		{"limit=-1", ""},
		{"limit=10001", ""},
		{"limit=1&limit=2", ""},
		{"start=1e3", ""},
		{"count=yes", ""},
		{"sort=name,name", ""},
		{"sort=-", ""},
		{"fields=uuid,,name", ""},
		{"q=%zz&sort=;", ""},
		{"q=name=a;b", ""},
		{"q=na\xffme=x", "name=\xff\xfe"},
		// Seeds stay small (the fuzzer mutates and minimizes them, slowly
		// when they are large); parse_test.go covers MaxListValues.
		{"q=" + strings.Repeat("q", 256), ""},
		{strings.Repeat("q=name=a&", MaxConditions+1), ""},
		{"q=cpuNum?=" + strings.Repeat("1,", 50), ""},
		// The second argument is one more q, added without URL decoding.
		{"", "description=a=b"},
		{"", "createDate>=2024-05-01T12:00:00 02:00"},
		{"", "zoneUuid \t IS \t NULL"},
		{"", "createDate=9223372036854775807"},
		{"", "createDate?=2024-05-01,-9223372036854775808"},
	}
	for _, s := range seeds {
		f.Add(s.raw, s.q)
	}
	modelSchema := SchemaOf[testModel]()
	inventories := []map[string]any{
		{"uuid": "u1", "name": "vm1", "cpuNum": 2, "vmNics": []any{map[string]any{"ip": "10.0.0.1"}}},
		{"uuid": "u2", "name": "vm2", "children": []any{}},
	}
	f.Fuzz(func(t *testing.T, raw, extraQ string) {
		// As r.URL.Query() does, the decoding error is dropped: Parse gets
		// whatever pairs decoded.
		values, _ := url.ParseQuery(raw)
		if extraQ != "" {
			values.Add("q", extraQ)
		}
		for _, s := range []*Schema{vmSchema, modelSchema} {
			q, err := Parse(s, values)
			if err != nil {
				var e *errcode.Error
				if !errors.As(err, &e) || e.Code != errcode.InvalidArgument || e.Code.HTTPStatus() != 400 {
					t.Fatalf("Parse(%q): error %v (%T), want an *errcode.Error %s", values, err, err, errcode.InvalidArgument)
				}
				if q != nil {
					t.Fatalf("Parse(%q): a query %+v with the error %v", values, q, err)
				}
				continue
			}
			checkQuery(t, s, values, q)
			for _, c := range q.Conditions {
				_ = c.expression()
			}
			if _, err := q.Reply(inventories, 2); err != nil {
				t.Fatalf("Parse(%q): Reply: %v", values, err)
			}
		}
	})
}

func checkQuery(t *testing.T, s *Schema, values url.Values, q *Query) {
	t.Helper()
	if q.Limit < 0 || q.Limit > MaxLimit || q.Start < 0 {
		t.Fatalf("Parse(%q): limit %d start %d out of bounds", values, q.Limit, q.Start)
	}
	if len(q.Conditions) > MaxConditions || len(q.Conditions) != len(values["q"]) {
		t.Fatalf("Parse(%q): %d conditions for %d q", values, len(q.Conditions), len(values["q"]))
	}
	for _, c := range q.Conditions {
		f, ok := s.Field(c.Field.Name)
		if !ok || f != c.Field || f.Column == "" {
			t.Fatalf("Parse(%q): condition on %+v, not a queryable field of the schema", values, c.Field)
		}
		if !allowed(f.Type, c.Op) {
			t.Fatalf("Parse(%q): operator %q on %s (%s)", values, c.Op, f.Name, f.Type)
		}
		switch n := len(c.Values); c.Op {
		case IsNull, NotNull:
			if n != 0 {
				t.Fatalf("Parse(%q): %s with %d values", values, c.Op, n)
			}
		case In, NotIn:
			if n < 1 || n > MaxListValues {
				t.Fatalf("Parse(%q): %s with %d values", values, c.Op, n)
			}
		default:
			if n != 1 {
				t.Fatalf("Parse(%q): %s with %d values", values, c.Op, n)
			}
		}
		for _, v := range c.Values {
			var ok bool
			switch f.Type {
			case String:
				_, ok = v.(string)
			case Int:
				_, ok = v.(int64)
			case Bool:
				_, ok = v.(bool)
			case Time:
				var tv time.Time
				tv, ok = v.(time.Time)
				ok = ok && tv.Location() == time.UTC
			}
			if !ok {
				t.Fatalf("Parse(%q): value %#v for %s (%s)", values, v, f.Name, f.Type)
			}
		}
	}
	seen := map[string]bool{}
	for _, k := range q.Sort {
		f, ok := s.Field(k.Field.Name)
		if !ok || f != k.Field || f.Column == "" || seen[f.Name] {
			t.Fatalf("Parse(%q): sort key %+v", values, k)
		}
		seen[f.Name] = true
	}
	for _, name := range q.Fields {
		if _, ok := s.Field(name); !ok {
			t.Fatalf("Parse(%q): field %q not in the schema", values, name)
		}
	}
}
