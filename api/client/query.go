package client

import (
	"net/url"
	"strconv"
	"strings"
)

// Query holds the parameters of GET /v1/<resources>. The zero Query lists
// everything the server returns by default.
type Query struct {
	// Q are the conditions, each sent as one q= parameter and all of them
	// required: "field<op>value" with op one of =, !=, >, <, >=, <=, ~=
	// (SQL LIKE, % and _ wildcards), !~=, ?= (in a comma list), !?= (not
	// in), or "field is null", "field not null". Where builds them.
	Q []string
	// Limit is the page size (0: not sent, the server's default).
	Limit int
	// Start is the offset of the page (0: not sent).
	Start int
	// Count asks for the number of matches only (count=true): no
	// inventories.
	Count bool
	// ReplyWithCount asks for the number of matches beside the page.
	ReplyWithCount bool
	// Sort is "+field" (ascending) or "-field" (descending); a bare field
	// name is sent as is.
	Sort string
	// Fields restricts the inventories to these fields.
	Fields []string
}

// Operators of a query condition.
const (
	OpEq      = "="
	OpNe      = "!="
	OpGt      = ">"
	OpLt      = "<"
	OpGe      = ">="
	OpLe      = "<="
	OpLike    = "~="
	OpNotLike = "!~="
	OpIn      = "?="
	OpNotIn   = "!?="
	OpIsNull  = " is null"
	OpNotNull = " not null"
)

// Where builds one condition of Query.Q: Where("state", OpEq, "Running")
// is "state=Running"; Where("uuid", OpIn, "a", "b") is "uuid?=a,b";
// Where("hostUuid", OpIsNull) is "hostUuid is null".
func Where(field, op string, values ...string) string {
	if op == OpIsNull || op == OpNotNull {
		return field + op
	}
	return field + op + strings.Join(values, ",")
}

// Encode is q as a URL query string (without "?"); every value is
// escaped, so conditions may hold any character ("name~=%a&b%").
func (q Query) Encode() string {
	v := url.Values{}
	for _, c := range q.Q {
		v.Add("q", c)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Start > 0 {
		v.Set("start", strconv.Itoa(q.Start))
	}
	if q.Count {
		v.Set("count", "true")
	}
	if q.ReplyWithCount {
		v.Set("replyWithCount", "true")
	}
	if q.Sort != "" {
		v.Set("sort", q.Sort)
	}
	if len(q.Fields) > 0 {
		v.Set("fields", strings.Join(q.Fields, ","))
	}
	return v.Encode()
}
