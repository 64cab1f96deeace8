package rest

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"mplane/errcode"
)

// ZStack's router prefers, segment by segment, a literal to a variable, so
// it serves both POST /l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}
// and POST /l2-networks/vxlan-pool/{l2NetworkUuid}/vni-range. ServeMux
// refuses the second: both match /l2-networks/vxlan-pool/clusters/vni-range
// and neither is more specific. handle registers such a pattern in a more
// general form that ServeMux accepts — its literal segments, from the
// last, made variables until it no longer conflicts, its variables named
// by position — with an overlap handler that checks the literals itself
// and names the variables as the pattern did. Patterns whose general forms
// are the same share one overlap handler, found on the mux itself
// (ServeMux.Handler), so nothing is kept outside it. The conflicting
// pattern registered first keeps its place: every request it matches
// (it is more specific than the general form) goes to it, as it did.

// handle registers pattern on mux, in a general form if it conflicts with
// a pattern there; fixed is the number of leading path segments never
// generalized (the API prefix and the resource's name). A pattern another
// takes every request of (the same one twice, or one whose variables alone
// are named otherwise) panics, as ServeMux does.
func handle(mux *http.ServeMux, pattern string, fixed int, h http.Handler) {
	err := tryHandle(mux, pattern, h)
	if err == nil {
		return
	}
	method, path := splitPattern(pattern)
	if strings.HasSuffix(path, "/") {
		panic(err.msg) // a subtree: no general form
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	probe := probeOf(method, segs)
	route := overlapRoute{literals: map[string]string{}, vars: map[string]string{}, h: h}
	general := make([]string, len(segs))
	for i, s := range segs {
		general[i] = s
		if name, multi, ok := variable(s); ok {
			g := positional(i)
			route.vars[g] = name
			general[i] = "{" + g + multi + "}"
		}
	}
	for i := len(segs) - 1; i >= fixed; i-- {
		if err.shadows(probe) {
			break
		}
		if _, _, ok := variable(segs[i]); ok {
			continue
		}
		g := positional(i)
		route.literals[g] = segs[i]
		general[i] = "{" + g + "}"
		candidate := method + "/" + strings.Join(general, "/")
		if ov := registeredOverlap(mux, candidate, probeOf(method, general)); ov != nil {
			ov.add(route)
			return
		}
		ov := &overlap{}
		ov.add(route)
		cerr := tryHandle(mux, candidate, ov)
		if cerr == nil {
			if got, pat := mux.Handler(probe); got != ov || pat != candidate {
				panic(fmt.Sprintf("rest: pattern %q: its general form %q does not serve it (%q does)", pattern, candidate, pat))
			}
			return
		}
		err = cerr
	}
	panic(err.msg)
}

// conflict is ServeMux's refusal of a pattern that conflicts with other.
type conflict struct{ msg, other string }

var conflictWith = regexp.MustCompile(`conflicts with pattern ("(?:[^"\\]|\\.)*")`)

// shadows reports whether the other pattern matches probe: it takes every
// request of the pattern probe stands for, whatever its general form.
func (c *conflict) shadows(probe *http.Request) bool {
	if c.other == "" {
		return true // unknown: do not guess
	}
	m := http.NewServeMux()
	m.Handle(c.other, http.NotFoundHandler())
	_, pat := m.Handler(probe)
	return pat == c.other
}

// tryHandle registers pattern, answering a conflict as an error; any other
// refusal panics, as ServeMux.Handle does.
func tryHandle(mux *http.ServeMux, pattern string, h http.Handler) (err *conflict) {
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if !strings.Contains(msg, "conflicts with") {
				panic(r)
			}
			err = &conflict{msg: msg}
			if m := conflictWith.FindStringSubmatch(msg); m != nil {
				err.other, _ = strconv.Unquote(m[1])
			}
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// probeOf is a request of the pattern method segs that no literal of
// another pattern matches at its variables.
func probeOf(method string, segs []string) *http.Request {
	probe := make([]string, len(segs))
	for i, s := range segs {
		probe[i] = s
		if _, _, ok := variable(s); ok {
			probe[i] = "~overlap~"
		}
	}
	return &http.Request{Method: strings.TrimSpace(method), URL: &url.URL{Path: "/" + strings.Join(probe, "/")}}
}

// variable parses a path segment "{name}" or "{name...}".
func variable(seg string) (name, multi string, ok bool) {
	if !strings.HasPrefix(seg, "{") || !strings.HasSuffix(seg, "}") {
		return "", "", false
	}
	name = seg[1 : len(seg)-1]
	if n, found := strings.CutSuffix(name, "..."); found {
		return n, "...", true
	}
	return name, "", true
}

func positional(i int) string { return fmt.Sprintf("overlap%d", i) }

// registeredOverlap is the overlap handler mux has for the general
// pattern, if it has one: the handler of probe, a request that only the
// general pattern matches.
func registeredOverlap(mux *http.ServeMux, pattern string, probe *http.Request) *overlap {
	h, pat := mux.Handler(probe)
	if ov, ok := h.(*overlap); ok && pat == pattern {
		return ov
	}
	return nil
}

// overlap serves the patterns of one general form: the first whose
// literals the request has.
type overlap struct {
	mu     sync.RWMutex
	routes []overlapRoute
}

type overlapRoute struct {
	literals map[string]string // positional variable → the pattern's literal
	vars     map[string]string // positional variable → the pattern's variable
	h        http.Handler
}

func (o *overlap) add(r overlapRoute) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.routes = append(o.routes, r)
}

func (o *overlap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.RLock()
	routes := o.routes
	o.mu.RUnlock()
next:
	for _, rt := range routes {
		for g, lit := range rt.literals {
			if r.PathValue(g) != lit {
				continue next
			}
		}
		for g, name := range rt.vars {
			r.SetPathValue(name, r.PathValue(g))
		}
		rt.h.ServeHTTP(w, r)
		return
	}
	WriteError(w, errcode.New(errcode.ResourceNotFound, "no API path %s %s", r.Method, r.URL.Path))
}
