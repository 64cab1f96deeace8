package clienttest

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"mplane/api/rest"
	"mplane/errcode"
)

// ops in the order they are tried at the end of the field name (longest
// first).
var ops = []string{"!?=", "!~=", "!=", "?=", "~=", ">=", "<=", "=", ">", "<"}

var fieldName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*`)

type cond struct {
	field, op, value string
}

func parseCond(q string) (cond, error) {
	for _, suffix := range []string{" is null", " not null"} {
		if f, ok := strings.CutSuffix(q, suffix); ok && fieldName.FindString(f) == f {
			return cond{field: f, op: strings.TrimSpace(suffix)}, nil
		}
	}
	f := fieldName.FindString(q)
	if f == "" {
		return cond{}, fmt.Errorf("q=%s: must start with a field name", q)
	}
	rest := q[len(f):]
	for _, op := range ops {
		if v, ok := strings.CutPrefix(rest, op); ok {
			return cond{field: f, op: op, value: v}, nil
		}
	}
	return cond{}, fmt.Errorf("q=%s: no operator after %q; operators: = != > < >= <= ~= !~= ?= !?= \"is null\" \"not null\"", q, f)
}

func (c cond) match(inv map[string]any) bool {
	v, present := inv[c.field]
	present = present && v != nil
	s := fmt.Sprint(v)
	switch c.op {
	case "is null":
		return !present
	case "not null":
		return present
	case "=":
		return present && s == c.value
	case "!=":
		return !present || s != c.value
	case ">", "<", ">=", "<=":
		if !present {
			return false
		}
		r := compare(v, c.value)
		switch c.op {
		case ">":
			return r > 0
		case "<":
			return r < 0
		case ">=":
			return r >= 0
		}
		return r <= 0
	case "~=", "!~=":
		re := likeToRegexp(c.value)
		m := present && re.MatchString(s)
		return m == (c.op == "~=")
	case "?=", "!?=":
		in := false
		for _, x := range strings.Split(c.value, ",") {
			in = in || (present && s == x)
		}
		return in == (c.op == "?=")
	}
	return false
}

func likeToRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '%':
			b.WriteString(".*")
		case '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// compare orders numbers numerically and anything else as text; a missing
// value is smallest.
func compare(a, b any) int {
	if a == nil || b == nil {
		switch {
		case a == nil && b == nil:
			return 0
		case a == nil:
			return -1
		}
		return 1
	}
	as, bs := fmt.Sprint(a), fmt.Sprint(b)
	af, aerr := strconv.ParseFloat(as, 64)
	bf, berr := strconv.ParseFloat(bs, 64)
	if aerr == nil && berr == nil {
		switch {
		case af < bf:
			return -1
		case af > bf:
			return 1
		}
		return 0
	}
	return strings.Compare(as, bs)
}

// query answers GET /v1/<coll>[/{uuid}].
func (s *Server) query(w http.ResponseWriter, r *http.Request, segs []string) {
	coll := segs[0]
	s.mu.Lock()
	c, ok := s.store[coll]
	var list []map[string]any
	if ok {
		for _, inv := range c.list() {
			list = append(list, clone(inv))
		}
	}
	s.mu.Unlock()
	if !ok || len(segs) > 2 {
		rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "no API route GET %s", r.URL.Path))
		return
	}
	v := r.URL.Query()
	var conds []cond
	if len(segs) == 2 {
		conds = append(conds, cond{field: "uuid", op: "=", value: segs[1]})
	}
	for _, q := range v["q"] {
		c, err := parseCond(q)
		if err != nil {
			rest.WriteError(w, errcode.New(errcode.InvalidArgument, "%v", err))
			return
		}
		conds = append(conds, c)
	}
	var matched []map[string]any
	for _, inv := range list {
		ok := true
		for _, c := range conds {
			ok = ok && c.match(inv)
		}
		if ok {
			matched = append(matched, inv)
		}
	}
	total := len(matched)
	if v.Get("count") == "true" {
		rest.WriteJSON(w, http.StatusOK, map[string]any{"total": total})
		return
	}
	if srt := v.Get("sort"); srt != "" {
		desc := strings.HasPrefix(srt, "-")
		sortInventories(matched, strings.TrimLeft(srt, "+-"), desc)
	}
	start, err := intParam(v.Get("start"), "start")
	if err == nil && start > len(matched) {
		start = len(matched)
	}
	limit, err2 := intParam(v.Get("limit"), "limit")
	if err == nil {
		err = err2
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	matched = matched[start:]
	if limit > 0 && limit < len(matched) {
		matched = matched[:limit]
	}
	if f := v.Get("fields"); f != "" {
		names := strings.Split(f, ",")
		for i, inv := range matched {
			p := map[string]any{}
			for _, n := range names {
				if x, ok := inv[n]; ok {
					p[n] = x
				}
			}
			matched[i] = p
		}
	}
	if matched == nil {
		matched = []map[string]any{}
	}
	out := map[string]any{"inventories": matched}
	if v.Get("replyWithCount") == "true" {
		out["total"] = total
	}
	rest.WriteJSON(w, http.StatusOK, out)
}

func intParam(s, name string) (int, *errcode.Error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errcode.New(errcode.InvalidArgument, "%s must be a non-negative integer, got %q", name, s)
	}
	return n, nil
}
