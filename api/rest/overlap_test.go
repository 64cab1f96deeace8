package rest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// echo answers which route it is and the path values it names.
func echo(route string, vars ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out := map[string]string{"route": route}
		for _, v := range vars {
			out[v] = r.PathValue(v)
		}
		WriteJSON(w, http.StatusOK, out)
	}
}

// TestHandleOverlapping: ZStack's attach path and its VNI range path (and
// an alias of it) conflict in ServeMux's rules; each request reaches the
// pattern whose literals it has, with its variables by their names,
// under both prefixes, registered in either order.
func TestHandleOverlapping(t *testing.T) {
	attach := "POST /l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}"
	vniRange := "POST /l2-networks/vxlan-pool/{uuid}/vni-range"
	alias := "POST /l2-networks/vxlan-pool/{uuid}/vni-ranges"
	orders := map[string][]string{"attach first": {attach, vniRange, alias}, "ranges first": {vniRange, alias, attach}}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			mux := http.NewServeMux()
			routes := map[string]http.HandlerFunc{
				attach:   echo("attach", "l2NetworkUuid", "clusterUuid"),
				vniRange: echo("vni-range", "uuid"),
				alias:    echo("vni-ranges", "uuid"),
			}
			for _, p := range order {
				HandleFunc(mux, p, routes[p])
			}
			HandleFunc(mux, "POST /l2-networks/vlan", echo("vlan"))
			HandleFunc(mux, "GET /l2-networks/{uuid}", echo("get", "uuid"))
			tests := []struct {
				method, path string
				status       int
				want         map[string]string
			}{
				{"POST", "/v1/l2-networks/n1/clusters/c1", 200, map[string]string{"route": "attach", "l2NetworkUuid": "n1", "clusterUuid": "c1"}},
				{"POST", "/zstack/v1/l2-networks/n1/clusters/c1", 200, map[string]string{"route": "attach", "l2NetworkUuid": "n1", "clusterUuid": "c1"}},
				{"POST", "/v1/l2-networks/vxlan-pool/p1/vni-range", 200, map[string]string{"route": "vni-range", "uuid": "p1"}},
				{"POST", "/zstack/v1/l2-networks/vxlan-pool/p1/vni-ranges", 200, map[string]string{"route": "vni-ranges", "uuid": "p1"}},
				{"POST", "/v1/l2-networks/vlan", 200, map[string]string{"route": "vlan"}},
				{"GET", "/v1/l2-networks/n1", 200, map[string]string{"route": "get", "uuid": "n1"}},
				// What none of them has: refused, by the overlap handler.
				{"POST", "/v1/l2-networks/n1/hosts/h1", 404, nil},
				{"POST", "/v1/l2-networks/vxlan-pool/p1/vtep", 404, nil},
				{"POST", "/v1/zones/z1/clusters/c1", 404, nil},
			}
			for _, tc := range tests {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}")))
				if rec.Code != tc.status {
					t.Errorf("%s %s: status %d (%s), want %d", tc.method, tc.path, rec.Code, rec.Body, tc.status)
					continue
				}
				if tc.want == nil {
					continue
				}
				var got map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				for k, v := range tc.want {
					if got[k] != v {
						t.Errorf("%s %s: %s = %q, want %q (got %v)", tc.method, tc.path, k, got[k], v, got)
					}
				}
			}
		})
	}
}

// TestHandleStillPanics: a conflict no general form can resolve (the same
// pattern twice, two patterns that differ only in their variables'
// names) and an invalid pattern panic, as ServeMux does.
func TestHandleStillPanics(t *testing.T) {
	for name, patterns := range map[string][]string{
		"same pattern twice":    {"GET /zones/{uuid}", "GET /zones/{uuid}"},
		"only the names differ": {"GET /zones/{uuid}/x", "GET /zones/{id}/x"},
		"invalid":               {"GET /zones/{uu id}"},
		"the resource's name":   {"POST /{kind}/vlan", "POST /l2-networks/{uuid}"},
		"a subtree":             {"GET /l2-networks/{uuid}/x", "GET /l2-networks/vlan/"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			mux := http.NewServeMux()
			for _, p := range patterns {
				HandleFunc(mux, p, echo(p))
			}
		}()
	}
}
