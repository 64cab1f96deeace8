package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"mplane/errcode"
)

// Fuzz targets of the request-body decoders. Their seeds run as unit tests
// in go test; `make fuzz` runs them for FUZZTIME each.
//
// Properties checked:
//
//   - the decoders never panic;
//   - every error is an *errcode.Error whose code answers a 4xx status (a
//     client's mistake is never a 500);
//   - a decoded value, encoded again in the same body shape, decodes
//     without error to an equal value (and the same tags).

// fuzzDisk is a nested struct with a required field.
type fuzzDisk struct {
	Size int64    `json:"size"`
	Name string   `json:"name" api:"required"`
	Tags []string `json:"tags"`
}

// fuzzZone is embedded in fuzzParams: its field is promoted.
type fuzzZone struct {
	ZoneUUID string `json:"zoneUuid"`
}

// fuzzParams covers the kinds of field a create API's params hold.
type fuzzParams struct {
	fuzzZone
	Name        string              `json:"name" api:"required"`
	CPUNum      int                 `json:"cpuNum"`
	MemorySize  uint64              `json:"memorySize"`
	Small       int8                `json:"small"`
	Ratio       float64             `json:"ratio"`
	Start       bool                `json:"start"`
	Description *string             `json:"description"`
	Count       *int32              `json:"count"`
	L3Networks  []string            `json:"l3NetworkUuids"`
	Disks       []fuzzDisk          `json:"disks"`
	RootDisk    *fuzzDisk           `json:"rootDisk"`
	Labels      map[string]string   `json:"labels"`
	Limits      map[string]int      `json:"limits"`
	Groups      map[string][]string `json:"groups"`
	Skipped     string              `json:"-"`
}

// Validate refuses one value with a plain error (which must become
// InvalidArgument).
func (p *fuzzParams) Validate() error {
	if p.CPUNum < 0 {
		return errors.New("cpuNum must be >= 0")
	}
	return nil
}

// fuzzStop is a small action body.
type fuzzStop struct {
	Type  string `json:"type"`
	Force *bool  `json:"force"`
}

// requireClientError fails unless err is an *errcode.Error with a 4xx
// status.
func requireClientError(t *testing.T, what string, err error) {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) is not an *errcode.Error", what, err, err)
	}
	if st := e.Code.HTTPStatus(); st < 400 || st > 499 {
		t.Fatalf("%s: error %v answers HTTP %d, want 4xx", what, err, st)
	}
}

func fuzzRequest(body []byte) *http.Request {
	return httptest.NewRequest(http.MethodPost, "/v1/vm-instances", bytes.NewReader(body))
}

// sameTags compares tags; nil and empty lists are the same (omitempty
// drops an empty list when the body is encoded again).
func sameTags(a, b Tags) bool {
	return slices.Equal(a.SystemTags, b.SystemTags) && slices.Equal(a.UserTags, b.UserTags)
}

// paramsSeeds are bodies of POST /v1/<resources>.
var paramsSeeds = []string{
	`{"params":{"name":"vm1"}}`,
	`{"params": {"name": "vm1", "cpuNum": 2, "memorySize": 1073741824, "small": -128, "ratio": 0.5,
		"start": true, "description": "d", "count": 7, "zoneUuid": "z1",
		"l3NetworkUuids": ["a", "b"], "disks": [{"size": 1, "name": "x", "tags": ["t"]}],
		"rootDisk": {"name": "root", "size": 10}, "labels": {"k": "v"}, "limits": {"iops": 100},
		"groups": {"g": ["a", "b"], "h": []}}, "systemTags": ["a::b"], "userTags": ["u"]}`,
	`{"params":{"name":"vm1","description":null,"labels":{},"l3NetworkUuids":[],"disks":null}}`,
	`{"params":{"name":"vm1"},"systemTags":["instanceOfferingUuid::x", null],"userTags":null}`,
	// Mistakes of every kind.
	``,
	` `,
	`null`,
	`[]`,
	`"params"`,
	`{}`,
	`{"params":null}`,
	`{"params":[1]}`,
	`{"params":{}}`,
	`{"params":{"name":null}}`,
	`{"params":{"name":"vm1","cpuNum":-1}}`,
	`{"params":{"name":"vm1"},"systemtags":[]}`,
	`{"params":{"name":"vm1"},"systemTags":"a"}`,
	`{"params":{"name":"x","NAME":"y"}}`,
	`{"params":{"name":"x","Skipped":"y"}}`,
	`{"params":{"name":"x","disks":[{"size":1},{"name":"b","sizee":2}]}}`,
	`{"params":{"name":"x","rootDisk":null}}`,
	`{"params":{"name":"x","rootDisk":{}}}`,
	`{"params":{"name":"x","groups":{"g":[{"a":1}]}}}`,
	`{"params":{"name":}}`,
	`{"params":{"name":"x"`,
	`{"params":{"name":"x"}} {}`,
	"{\"params\":\n{\"name\" \"x\"}}",
	// Numbers: huge, negative into unsigned, fractional, exponent.
	`{"params":{"name":"x","cpuNum":1e999}}`,
	`{"params":{"name":"x","cpuNum":99999999999999999999999999999}}`,
	`{"params":{"name":"x","memorySize":-1}}`,
	`{"params":{"name":"x","small":128}}`,
	`{"params":{"name":"x","cpuNum":1.5}}`,
	`{"params":{"name":"x","ratio":1e308,"count":2147483648}}`,
	`{"params":{"name":"x","ratio":-0,"cpuNum":-0}}`,
	// Duplicate keys (the last wins, in walk and in encoding/json alike).
	`{"params":{"name":"a","name":"b"}}`,
	`{"params":{"name":"a"},"params":{"cpuNum":1}}`,
	`{"params":{"name":"a","labels":{"k":"1","k":"2"}}}`,
	// Escapes and invalid UTF-8.
	`{"params":{"n\u0061me":"\u00e9\ud800x"}}`,
	"{\"params\":{\"name\":\"\xff\xfe\"}}",
	"{\"params\":{\"name\xff\":\"x\"}}",
	"\xef\xbb\xbf{\"params\":{\"name\":\"x\"}}",
	// Deep nesting (small: the fuzzer mutates and minimizes seeds, slowly
	// when they are large; TestDecodeNestingBeyondLimit has the deepest).
	`{"params":{"name":"x","labels":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64) + `}}`,
	`{"params":{"name":"x","groups":{"g":` + strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100) + `}}}`,
}

// TestDecodeNestingBeyondLimit: bodies nested deeper than encoding/json's
// limit (10000) are refused as malformed, not crashed on. Too large for a
// fuzz seed.
func TestDecodeNestingBeyondLimit(t *testing.T) {
	const depth = 20000
	var v fuzzParams
	_, err := DecodeParams(fuzzRequest([]byte(`{"params":`+strings.Repeat(`[`, depth)+strings.Repeat(`]`, depth)+`}`)), &v)
	requireClientError(t, "DecodeParams", err)
	deep := `{"stopVmInstance":` + strings.Repeat(`{"a":`, depth) + `1` + strings.Repeat(`}`, depth) + `}`
	_, err = DecodeAction(fuzzRequest([]byte(deep)), actionNames...)
	requireClientError(t, "DecodeAction", err)
	// Just within the limit, the decoders go through every level.
	within := `{"params":{"name":"x","groups":{"g":[` + strings.Repeat(`[`, 9990) + strings.Repeat(`]`, 9990) + `]}}}`
	_, err = DecodeParams(fuzzRequest([]byte(within)), &v)
	requireClientError(t, "DecodeParams", err)
}

func FuzzDecodeParams(f *testing.F) {
	for _, s := range paramsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v fuzzParams
		tags, err := DecodeParams(fuzzRequest(body), &v)
		if err != nil {
			requireClientError(t, "DecodeParams", err)
			return
		}
		again, err := json.Marshal(map[string]any{"params": &v, "systemTags": tags.SystemTags, "userTags": tags.UserTags})
		if err != nil {
			t.Fatalf("encode decoded params %+v: %v", v, err)
		}
		var w fuzzParams
		tags2, err := DecodeParams(fuzzRequest(again), &w)
		if err != nil {
			t.Fatalf("decoded params encoded again do not decode:\n body %q\nagain %s\n  err %v", body, again, err)
		}
		if !reflect.DeepEqual(v, w) || !sameTags(tags, tags2) {
			t.Fatalf("round trip changed the value:\n body %q\nfirst %+v %+v\nagain %s\nsecond %+v %+v", body, v, tags, again, w, tags2)
		}
	})
}

// actionNames are the actions the fuzzed bodies are checked against, with
// one more chosen by the fuzzer.
var actionNames = []string{"startVmInstance", "stopVmInstance"}

func FuzzDecodeAction(f *testing.F) {
	seeds := []struct{ body, name string }{
		{`{"stopVmInstance":{"type":"grace"}}`, ""},
		{`{"stopVmInstance":{"type":"cold","force":true},"systemTags":["x"],"userTags":[]}`, ""},
		{`{"startVmInstance":{}}`, ""},
		{`{"rebootVmInstance":{"name":"vm1"}}`, "rebootVmInstance"},
		{`{"logInByAccount":{"accountName":"admin","password":"p"}}`, "logInByAccount"},
		{`{"":{}}`, ""},
		{`{"systemTags":{}}`, "systemTags"},
		{``, ""},
		{`null`, ""},
		{`{}`, ""},
		{`{"systemTags":[]}`, ""},
		{`{"stopVmInstance":{},"startVmInstance":{}}`, ""},
		{`{"stopVmInstance":{},"stopVmInstance":[]}`, ""},
		{`{"stopVmInstance":{"type":"a"},"stopVmInstance":{"type":"b"}}`, ""},
		{`{"stopVmInstance":true}`, ""},
		{`{"stopVmInstance":null}`, ""},
		{`{"stopVmInstance":"{}"}`, ""},
		{`{"stopVmInstance":{]}`, ""},
		{`{"stopVmInstance":{"type":1}}`, ""},
		{`{"stopVmInstance":{"Type":"x"}}`, ""},
		{`{"stopVmInstance":{"type":null,"force":null}}`, ""},
		{`{"stopVmInstance":{"force":1e999}}`, ""},
		{`{"stopVmInstance":{}, "systemTags":[1]}`, ""},
		{"{\"stop\xffVm\":{}}", "stop\xffVm"},
		{`{"stopVmInstance":{"type":"x","force":` + strings.Repeat(`[`, 50) + strings.Repeat(`]`, 50) + `}}`, ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.name)
	}
	f.Fuzz(func(t *testing.T, body []byte, extra string) {
		valid := append(slices.Clip(actionNames), extra)
		a, err := DecodeAction(fuzzRequest(body), valid...)
		if err != nil {
			requireClientError(t, "DecodeAction", err)
			return
		}
		if !slices.Contains(valid, a.Name) || isTagKey(a.Name) {
			t.Fatalf("action %q is not one of %q", a.Name, valid)
		}
		if len(a.Body) == 0 || a.Body[0] != '{' {
			t.Fatalf("action body %q is not an object", a.Body)
		}
		var v any = new(fuzzParams)
		if a.Name == "stopVmInstance" {
			v = new(fuzzStop)
		}
		if err := a.Decode(v); err != nil {
			requireClientError(t, "Action.Decode", err)
			return
		}
		again, err := json.Marshal(map[string]any{a.Name: v, "systemTags": a.Tags.SystemTags, "userTags": a.Tags.UserTags})
		if err != nil {
			t.Fatalf("encode decoded action %+v: %v", v, err)
		}
		b, err := DecodeAction(fuzzRequest(again), valid...)
		if err != nil {
			t.Fatalf("decoded action encoded again does not decode:\n body %q\nagain %s\n  err %v", body, again, err)
		}
		w := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := b.Decode(w); err != nil {
			t.Fatalf("decoded action encoded again does not decode:\n body %q\nagain %s\n  err %v", body, again, err)
		}
		if b.Name != a.Name || !reflect.DeepEqual(v, w) || !sameTags(a.Tags, b.Tags) {
			t.Fatalf("round trip changed the action:\n body %q\nfirst %s %+v %+v\nagain %s\nsecond %s %+v %+v", body, a.Name, v, a.Tags, again, b.Name, w, b.Tags)
		}
	})
}
