package query

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"mplane/errcode"
)

// Limits of a query, documented in the package doc.
const (
	DefaultLimit  = 1000  // rows returned when limit is not given
	MaxLimit      = 10000 // the largest limit accepted
	MaxConditions = 64    // q parameters in one query
	MaxListValues = 1000  // values in one ?= or !?= list
	MaxValues     = 2000  // values of all the conditions of one query
)

// Op is a query operator.
type Op string

// The operators of ZStack's REST query.
const (
	Eq      Op = "="
	Neq     Op = "!="
	Gt      Op = ">"
	Lt      Op = "<"
	Gte     Op = ">="
	Lte     Op = "<="
	Like    Op = "~="  // SQL LIKE; % is the wildcard
	NotLike Op = "!~=" // SQL NOT LIKE
	In      Op = "?="  // in a comma-separated list
	NotIn   Op = "!?=" // not in a comma-separated list
	IsNull  Op = "is null"
	NotNull Op = "not null"
)

// symbolOps are the operators written between field and value, longest
// first: the operator of "name!?=a" is "!?=", not "!" followed by "?=".
var symbolOps = []Op{NotIn, NotLike, Neq, Gte, Lte, In, Like, Eq, Gt, Lt}

const opList = `=, !=, >, <, >=, <=, ~=, !~=, ?=, !?=, "is null", "not null"`

// allowedOps lists the operators each type supports, in the order messages
// show them.
var allowedOps = map[Type][]Op{
	String: {Eq, Neq, Gt, Lt, Gte, Lte, Like, NotLike, In, NotIn, IsNull, NotNull},
	Int:    {Eq, Neq, Gt, Lt, Gte, Lte, In, NotIn, IsNull, NotNull},
	Time:   {Eq, Neq, Gt, Lt, Gte, Lte, In, NotIn, IsNull, NotNull},
	Bool:   {Eq, Neq, IsNull, NotNull},
}

// Condition is one parsed q parameter.
type Condition struct {
	Field Field
	Op    Op
	// Values holds the parsed values: none for IsNull and NotNull, the list
	// for In and NotIn, one otherwise. Their Go types are string, int64,
	// bool or time.Time (UTC) by the field's Type.
	Values []any
}

// SortKey is one key of sort=.
type SortKey struct {
	Field Field
	Desc  bool
}

// Query is a parsed, validated query. Build it with Parse; apply it with
// Filter/Apply or Find, and shape the answer with Reply.
type Query struct {
	Conditions []Condition
	Sort       []SortKey
	// Limit is in [0, MaxLimit]; DefaultLimit when not given.
	Limit int
	// Start is the number of rows skipped (>= 0).
	Start int
	// Count: answer only the total, {"total": N}.
	Count bool
	// ReplyWithCount: answer the inventories and the total.
	ReplyWithCount bool
	// Fields are the inventory fields to keep (fields=); empty keeps all.
	Fields []string

	schema *Schema
}

// Parse reads the query parameters of GET /v1/<resources> against schema.
// Parameters other than q, limit, start, count, replyWithCount, sort and
// fields are ignored (the handler may use them). The error is always an
// *errcode.Error with code InvalidArgument whose details say what is wrong
// and what is allowed.
func Parse(schema *Schema, values url.Values) (*Query, error) {
	q := &Query{Limit: DefaultLimit, schema: schema}

	items := values["q"]
	if len(items) > MaxConditions {
		return nil, invalid("too many q parameters: %d; at most %d", len(items), MaxConditions)
	}
	nvalues := 0
	for _, item := range items {
		c, err := schema.parseCondition(item)
		if err != nil {
			return nil, err
		}
		if nvalues += len(c.Values); nvalues > MaxValues {
			return nil, invalid("too many values in the q parameters: more than %d in all; split the query", MaxValues)
		}
		q.Conditions = append(q.Conditions, c)
	}

	if v, ok, err := single(values, "limit"); err != nil {
		return nil, err
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxLimit {
			return nil, invalid("limit must be an integer from 0 to %d, got %q", MaxLimit, v)
		}
		q.Limit = n
	}
	if v, ok, err := single(values, "start"); err != nil {
		return nil, err
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, invalid("start must be an integer >= 0, got %q", v)
		}
		q.Start = n
	}
	var err error
	if q.Count, err = boolParam(values, "count"); err != nil {
		return nil, err
	}
	if q.ReplyWithCount, err = boolParam(values, "replyWithCount"); err != nil {
		return nil, err
	}
	if v, ok, err := single(values, "sort"); err != nil {
		return nil, err
	} else if ok {
		if q.Sort, err = schema.parseSort(v); err != nil {
			return nil, err
		}
	}
	if v, ok, err := single(values, "fields"); err != nil {
		return nil, err
	} else if ok {
		if q.Fields, err = schema.parseFields(v); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// ParseRaw is Parse of a raw URL query string (http.Request.URL.RawQuery).
// Unlike url.URL.Query, which drops a parameter holding a ';' without a
// word (so that "q=name=x;" would return every row), it refuses such a
// query: a ';' in a value must be sent as %3B.
func ParseRaw(schema *Schema, rawQuery string) (*Query, error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		if strings.Contains(err.Error(), "semicolon") {
			return nil, invalid("the query string holds a ';': parameters are separated by '&', and a ';' in a value must be sent as %%3B")
		}
		return nil, invalid("malformed query string: %v", err)
	}
	return Parse(schema, values)
}

// single returns the one value of a parameter that may be given once.
func single(values url.Values, name string) (string, bool, error) {
	vs, ok := values[name]
	switch {
	case !ok:
		return "", false, nil
	case len(vs) > 1:
		return "", false, invalid("%s may be given once, got %d values", name, len(vs))
	}
	return vs[0], true, nil
}

func boolParam(values url.Values, name string) (bool, error) {
	v, ok, err := single(values, name)
	if err != nil || !ok {
		return false, err
	}
	b, ok := parseBool(v)
	if !ok {
		return false, invalid("%s must be true or false, got %q", name, v)
	}
	return b, nil
}

func parseBool(v string) (b, ok bool) {
	switch strings.ToLower(v) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

func isNameByte(c byte) bool {
	return c == '_' || c == '.' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// parseCondition parses one q value. The field name is the longest run of
// name characters (letters, digits, '_', '.') at the start; the operator is
// the longest operator that follows it; everything after the operator is
// the value, whatever characters it holds ("description=a=b" is
// description = "a=b", "name==x" is name = "=x").
func (s *Schema) parseCondition(item string) (Condition, error) {
	i := 0
	for i < len(item) && isNameByte(item[i]) {
		i++
	}
	name, rest := item[:i], item[i:]
	if name == "" {
		return Condition{}, invalid("q %q: missing field name; expected field<op>value, e.g. q=name=vm1", item)
	}
	f, ok := s.byName[name]
	if !ok {
		return Condition{}, invalid("q %q: unknown field %q; queryable fields: %s", item, name, s.queryable())
	}
	if f.Column == "" {
		return Condition{}, invalid("q %q: field %q cannot be queried; queryable fields: %s", item, name, s.queryable())
	}

	op, value := splitOp(rest)
	if op == "" {
		return Condition{}, invalid("q %q: unknown operator after %q; operators: %s", item, name, opList)
	}
	if !allowed(f.Type, op) {
		return Condition{}, invalid("q %q: operator %s is not allowed on %s (%s); allowed: %s", item, op, name, f.Type, listOps(allowedOps[f.Type]))
	}

	c := Condition{Field: f, Op: op}
	switch op {
	case IsNull, NotNull:
		return c, nil
	case In, NotIn:
		parts := strings.Split(value, ",")
		if len(parts) > MaxListValues {
			return Condition{}, invalid("q %q: at most %d values in a list, got %d", item, MaxListValues, len(parts))
		}
		for _, p := range parts {
			v, err := parseValue(f, p)
			if err != nil {
				return Condition{}, invalid("q %q: %s", item, err.Details)
			}
			c.Values = append(c.Values, v)
		}
	default:
		v, err := parseValue(f, value)
		if err != nil {
			return Condition{}, invalid("q %q: %s", item, err.Details)
		}
		c.Values = []any{v}
	}
	return c, nil
}

// splitOp finds the operator at the start of rest. "is null" and "not null"
// are words after at least one space (a "+" in a URL query is a space);
// they must end the item and are matched without regard to case.
func splitOp(rest string) (Op, string) {
	if rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		switch strings.ToLower(strings.Join(strings.Fields(rest), " ")) {
		case string(IsNull):
			return IsNull, ""
		case string(NotNull):
			return NotNull, ""
		}
		return "", ""
	}
	for _, op := range symbolOps {
		if strings.HasPrefix(rest, string(op)) {
			return op, rest[len(op):]
		}
	}
	return "", ""
}

func allowed(t Type, op Op) bool {
	for _, o := range allowedOps[t] {
		if o == op {
			return true
		}
	}
	return false
}

func listOps(ops []Op) string {
	s := make([]string, len(ops))
	for i, o := range ops {
		s[i] = string(o)
		if o == IsNull || o == NotNull {
			s[i] = `"` + s[i] + `"`
		}
	}
	return strings.Join(s, ", ")
}

// timeLayouts are the accepted text forms of a Time value; forms without
// a zone are UTC. Every layout accepts an optional fraction of a second.
var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// spaceZone matches a "+hh:mm" zone whose "+" a URL query turned into a space.
var spaceZone = regexp.MustCompile(`:\d\d(\.\d+)? (\d\d:\d\d)$`)

const timeForms = "RFC 3339 like 2024-05-01T10:00:00Z, 2024-05-01 10:00:00 (UTC), 2024-05-01 (UTC), or Unix milliseconds"

func parseValue(f Field, v string) (any, *errcode.Error) {
	switch f.Type {
	case String:
		return v, nil
	case Int:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, invalid("%s must be an integer, got %q", f.Name, v)
		}
		return n, nil
	case Bool:
		b, ok := parseBool(v)
		if !ok {
			return nil, invalid("%s must be true or false, got %q", f.Name, v)
		}
		return b, nil
	case Time:
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.UnixMilli(ms).UTC(), nil
		}
		text := v
		if m := spaceZone.FindStringSubmatchIndex(text); m != nil {
			text = text[:m[4]-1] + "+" + text[m[4]:]
		}
		for _, layout := range timeLayouts {
			if t, err := time.ParseInLocation(layout, text, time.UTC); err == nil {
				return t.UTC(), nil
			}
		}
		return nil, invalid("%s must be a time (%s), got %q", f.Name, timeForms, v)
	}
	return nil, errcode.New(errcode.Internal, "field %s has no valid type", f.Name)
}

// parseSort reads sort=: comma-separated keys, each "+field" (ascending),
// "-field" (descending) or "field" (ascending). A leading space counts as
// "+", because an unencoded "+" in a URL query decodes to a space.
func (s *Schema) parseSort(v string) ([]SortKey, error) {
	var keys []SortKey
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		desc := false
		name := part
		switch {
		case strings.HasPrefix(part, "+"), strings.HasPrefix(part, " "):
			name = part[1:]
		case strings.HasPrefix(part, "-"):
			name, desc = part[1:], true
		}
		if name == "" {
			return nil, invalid("sort must be +field or -field (comma-separated for several keys), got %q", v)
		}
		f, ok := s.byName[name]
		if !ok || f.Column == "" {
			return nil, invalid("sort: unknown field %q; sortable fields: %s", name, s.queryable())
		}
		if seen[name] {
			return nil, invalid("sort: field %q given twice", name)
		}
		seen[name] = true
		keys = append(keys, SortKey{Field: f, Desc: desc})
	}
	return keys, nil
}

// parseFields reads fields=: comma-separated field names, spaces around
// them ignored, duplicates dropped.
func (s *Schema) parseFields(v string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		name := strings.TrimSpace(part)
		if name == "" {
			return nil, invalid("fields must be a comma-separated list of field names, got %q", v)
		}
		if _, ok := s.byName[name]; !ok {
			return nil, invalid("fields: unknown field %q; fields: %s", name, s.all())
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out, nil
}

func invalid(format string, args ...any) *errcode.Error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}
