package rest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"mplane/errcode"
)

type disk struct {
	Size int64  `json:"size"`
	Name string `json:"name"`
}

type createVM struct {
	Name        string            `json:"name" api:"required"`
	CPUNum      int               `json:"cpuNum"`
	MemorySize  uint64            `json:"memorySize"`
	Description *string           `json:"description"`
	L3Networks  []string          `json:"l3NetworkUuids"`
	Disks       []disk            `json:"disks"`
	Labels      map[string]string `json:"labels"`
	Start       bool              `json:"start"`
	When        time.Time         `json:"when"`
	Extra       any               `json:"extra"`
	//lint:ignore U1000 an unexported field, which the decoder must skip
	ignored int
}

func (c *createVM) Validate() error {
	if c.CPUNum < 0 {
		return errors.New("cpuNum must be >= 0")
	}
	if c.Name == "forbidden" {
		return errcode.New(errcode.PermissionDenied, "name forbidden")
	}
	return nil
}

func request(body string) *http.Request {
	return httptest.NewRequest(http.MethodPost, "/v1/vm-instances", strings.NewReader(body))
}

func wantError(t *testing.T, err error, code errcode.Code, details string) {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *errcode.Error %s", err, err, code)
	}
	if e.Code != code || e.Details != details {
		t.Fatalf("error\n got %s %q\nwant %s %q", e.Code, e.Details, code, details)
	}
}

func TestDecodeParams(t *testing.T) {
	ok := []struct {
		name string
		body string
		tags Tags
		want func(createVM) bool
	}{
		{"minimal", `{"params": {"name": "vm1"}}`, Tags{}, func(v createVM) bool { return v.Name == "vm1" }},
		{"full", `{"params": {"name": "vm1", "cpuNum": 2, "memorySize": 1024, "description": "d",
			"l3NetworkUuids": ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"], "disks": [{"size": 1, "name": "x"}], "labels": {"k": "v"},
			"start": true, "when": "2024-05-01T10:00:00Z", "extra": {"anything": [1, 2]}}}`, Tags{},
			func(v createVM) bool {
				return v.CPUNum == 2 && v.MemorySize == 1024 && *v.Description == "d" && len(v.L3Networks) == 2 &&
					v.Disks[0].Size == 1 && v.Labels["k"] == "v" && v.Start && v.When.Year() == 2024
			}},
		{"tags", `{"params": {"name": "vm1"}, "systemTags": ["a::b"], "userTags": ["u"]}`,
			Tags{SystemTags: []string{"a::b"}, UserTags: []string{"u"}}, func(v createVM) bool { return v.Name == "vm1" }},
		{"value containing braces", `{"params": {"name": "{\"params\": 1}"}}`, Tags{}, func(v createVM) bool { return v.Name == `{"params": 1}` }},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			var v createVM
			tags, err := DecodeParams(request(tc.body), &v)
			if err != nil {
				t.Fatalf("DecodeParams: %v", err)
			}
			if !tc.want(v) {
				t.Errorf("decoded %+v", v)
			}
			if fmt.Sprint(tags) != fmt.Sprint(tc.tags) {
				t.Errorf("tags %+v, want %+v", tags, tc.tags)
			}
		})
	}

	const allowed = "name, cpuNum, memorySize, description, l3NetworkUuids, disks, labels, start, when, extra"
	bad := []struct {
		name    string
		body    string
		code    errcode.Code
		details string
	}{
		{"empty", ``, errcode.InvalidArgument, `request body is empty; expected {"params": {...}}`},
		{"blank", " \n ", errcode.InvalidArgument, `request body is empty; expected {"params": {...}}`},
		{"syntax", `{"params": {"name": }}`, errcode.InvalidArgument,
			`malformed JSON at line 1, column 21 (byte offset 21): invalid character '}' looking for beginning of value`},
		{"syntax second line", "{\"params\":\n  {\"name\" \"x\"}}", errcode.InvalidArgument,
			`malformed JSON at line 2, column 11 (byte offset 22): invalid character '"' after object key`},
		{"truncated", `{"params": {"name": "x"`, errcode.InvalidArgument,
			`malformed JSON at line 1, column 23 (byte offset 23): unexpected end of JSON input`},
		{"trailing data", `{"params": {"name": "x"}} {}`, errcode.InvalidArgument,
			`malformed JSON at line 1, column 27 (byte offset 27): invalid character '{' after top-level value`},
		{"not an object", `[1]`, errcode.InvalidArgument, `request body must be a JSON object like {"params": {...}}, got array`},
		{"null body", `null`, errcode.InvalidArgument, `request body must be a JSON object like {"params": {...}}, got null`},
		{"missing params", `{"parms": {}}`, errcode.InvalidArgument,
			`unknown top-level field "parms"; expected {"params": {...}} with optional "systemTags" and "userTags"`},
		{"no params", `{}`, errcode.InvalidArgument, `missing "params"; expected {"params": {...}}`},
		{"null params", `{"params": null}`, errcode.InvalidArgument, `params must be a JSON object, got null`},
		{"params not object", `{"params": [1]}`, errcode.InvalidArgument, `params must be an object, got array`},
		{"unknown field", `{"params": {"name": "x", "cpuNumm": 1}}`, errcode.InvalidArgument,
			`params: unknown field "cpuNumm"; allowed fields: ` + allowed},
		{"wrong case", `{"params": {"NAME": "x"}}`, errcode.InvalidArgument,
			`params: unknown field "NAME"; allowed fields: ` + allowed},
		{"unexported name", `{"params": {"name": "x", "ignored": 1}}`, errcode.InvalidArgument,
			`params: unknown field "ignored"; allowed fields: ` + allowed},
		{"unknown nested field", `{"params": {"name": "x", "disks": [{"size": 1}, {"sizee": 2}]}}`, errcode.InvalidArgument,
			`params.disks[1]: unknown field "sizee"; allowed fields: size, name`},
		{"int from string", `{"params": {"name": "x", "cpuNum": "abc"}}`, errcode.InvalidArgument,
			`params.cpuNum must be an integer, got string`},
		{"int from float", `{"params": {"name": "x", "cpuNum": 1.5}}`, errcode.InvalidArgument,
			`params.cpuNum must be an integer, got number 1.5`},
		{"negative uint", `{"params": {"name": "x", "memorySize": -1}}`, errcode.InvalidArgument,
			`params.memorySize must be a non-negative integer, got number -1`},
		{"string from number", `{"params": {"name": 5}}`, errcode.InvalidArgument, `params.name must be a string, got number`},
		{"bool from string", `{"params": {"name": "x", "start": "yes"}}`, errcode.InvalidArgument,
			`params.start must be a boolean, got string`},
		{"array from string", `{"params": {"name": "x", "l3NetworkUuids": "a"}}`, errcode.InvalidArgument,
			`params.l3NetworkUuids must be an array of strings, got string`},
		{"nested type", `{"params": {"name": "x", "disks": [{"size": "big"}]}}`, errcode.InvalidArgument,
			`params.disks.size must be an integer, got string`},
		{"a field twice", `{"params": {"name": "x", "cpuNum": 1, "cpuNum": 64}}`, errcode.InvalidArgument,
			`body.params: field "cpuNum" is given twice; give each field once`},
		{"a nested field twice", `{"params": {"name": "x", "disks": [{"size": 1, "size": 2}]}}`, errcode.InvalidArgument,
			`body.params.disks[0]: field "size" is given twice; give each field once`},
		{"params twice", `{"params": {"name": "x"}, "params": {"name": "y"}}`, errcode.InvalidArgument,
			`body: field "params" is given twice; give each field once`},
		{"invalid UTF-8", "{\"params\": {\"name\": \"x\xff\"}}", errcode.InvalidArgument, `request body is not valid UTF-8`},
		{"a NUL", `{"params": {"name": "x", "description": "a\u0000b"}}`, errcode.InvalidArgument, `params.description must not hold a NUL character`},
		{"a control character in a name", `{"params": {"name": "x\u0007"}}`, errcode.InvalidArgument,
			`params.name must not hold control or format characters (found U+0007)`},
		{"a bidi override in a name", `{"params": {"name": "gpj.\u202eexe"}}`, errcode.InvalidArgument,
			`params.name must not hold control or format characters (found U+202E)`},
		{"a malformed UUID in a list", `{"params": {"name": "x", "l3NetworkUuids": ["0123456789abcdef0123456789abcdef", "l3-1"]}}`, errcode.InvalidArgument,
			`params.l3NetworkUuids[1] must be a UUID (32 lowercase hexadecimal digits), got "l3-1"`},
		{"required missing", `{"params": {"cpuNum": 1}}`, errcode.InvalidArgument, `params.name is required`},
		{"required null", `{"params": {"name": null}}`, errcode.InvalidArgument, `params.name is required`},
		{"validate plain error", `{"params": {"name": "x", "cpuNum": -1}}`, errcode.InvalidArgument, `params: cpuNum must be >= 0`},
		{"validate catalogue error", `{"params": {"name": "forbidden"}}`, errcode.PermissionDenied, `name forbidden`},
		{"bad tags", `{"params": {"name": "x"}, "systemTags": "a"}`, errcode.InvalidArgument,
			`systemTags must be an array of strings, got string`},
		{"too big", `{"params": {"name": "` + strings.Repeat("x", MaxBodyBytes) + `"}}`, errcode.InvalidArgument,
			fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var v createVM
			_, err := DecodeParams(request(tc.body), &v)
			wantError(t, err, tc.code, tc.details)
		})
	}
}

func TestDecodeParamsBadTarget(t *testing.T) {
	var v createVM
	_, err := DecodeParams(request(`{"params": {}}`), v)
	wantError(t, err, errcode.Internal, "decode params: target must be a non-nil pointer, got rest.createVM")
}

type stopVM struct {
	Type string `json:"type"`
}

func TestDecodeAction(t *testing.T) {
	valid := []string{"startVmInstance", "stopVmInstance"}
	t.Run("ok", func(t *testing.T) {
		a, err := DecodeAction(request(`{"stopVmInstance": {"type": "grace"}, "systemTags": ["x"]}`), valid...)
		if err != nil {
			t.Fatal(err)
		}
		var p stopVM
		if err := a.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if a.Name != "stopVmInstance" || p.Type != "grace" || len(a.Tags.SystemTags) != 1 {
			t.Errorf("action %+v params %+v", a, p)
		}
	})
	t.Run("empty object", func(t *testing.T) {
		a, err := DecodeAction(request(`{"startVmInstance": {}}`), valid...)
		if err != nil || a.Name != "startVmInstance" {
			t.Fatalf("action %+v err %v", a, err)
		}
	})
	bad := []struct {
		name, body, details string
	}{
		{"none", `{}`, `missing action: the body must have exactly one key, one of: startVmInstance, stopVmInstance`},
		{"only tags", `{"systemTags": []}`, `missing action: the body must have exactly one key, one of: startVmInstance, stopVmInstance`},
		{"two", `{"stopVmInstance": {}, "startVmInstance": {}}`,
			`expected exactly one action, got 2 (startVmInstance, stopVmInstance); valid actions: startVmInstance, stopVmInstance`},
		{"unknown", `{"rebootVmInstance": {}}`, `unknown action "rebootVmInstance"; valid actions: startVmInstance, stopVmInstance`},
		{"not object", `{"startVmInstance": true}`, `startVmInstance must be a JSON object, got bool`},
		{"null", `{"startVmInstance": null}`, `startVmInstance must be a JSON object, got null`},
		{"malformed", `{"startVmInstance": {]}`, `malformed JSON at line 1, column 22 (byte offset 22): invalid character ']' looking for beginning of object key string`},
		{"empty body", ``, `request body is empty; expected {"<action>": {...}}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeAction(request(tc.body), valid...)
			wantError(t, err, errcode.InvalidArgument, tc.details)
		})
	}
	t.Run("field errors name the action", func(t *testing.T) {
		for body, details := range map[string]string{
			`{"stopVmInstance": {"type": 1}}`:    `stopVmInstance.type must be a string, got number`,
			`{"stopVmInstance": {"typo": "x"}}`:  `stopVmInstance: unknown field "typo"; allowed fields: type`,
			`{"stopVmInstance": {"Type": "x"}}`:  `stopVmInstance: unknown field "Type"; allowed fields: type`,
			`{"stopVmInstance": {"type": null}}`: ``,
		} {
			a, err := DecodeAction(request(body), valid...)
			if err != nil {
				t.Fatal(err)
			}
			var p stopVM
			err = a.Decode(&p)
			if details == "" {
				if err != nil {
					t.Errorf("%s: %v", body, err)
				}
				continue
			}
			wantError(t, err, errcode.InvalidArgument, details)
		}
	})
	t.Run("single valid action names it", func(t *testing.T) {
		_, err := DecodeAction(request(``), "logInByAccount")
		wantError(t, err, errcode.InvalidArgument, `request body is empty; expected {"logInByAccount": {...}}`)
	})
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   errcode.Code
	}{
		{"invalid", errcode.New(errcode.InvalidArgument, "bad"), 400, errcode.InvalidArgument},
		{"wrapped not found", fmt.Errorf("get vm: %w", errcode.New(errcode.ResourceNotFound, "vm x")), 404, errcode.ResourceNotFound},
		{"unauthenticated", errcode.New(errcode.Unauthenticated, ""), 401, errcode.Unauthenticated},
		{"plain", errors.New("disk on fire"), 500, errcode.Internal},
		{"nil", nil, 500, errcode.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteError(rec, tc.err)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != ContentType {
				t.Errorf("Content-Type %q", ct)
			}
			var body struct {
				Error *errcode.Error `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == nil {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
			if body.Error.Code != tc.code || body.Error.Description == "" {
				t.Errorf("error %+v, want code %s", body.Error, tc.code)
			}
		})
	}
}

func TestWriteJSONEncodingFailure(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, map[string]any{"bad": make(chan int)})
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"code":"SYS.1000"`) {
		t.Fatalf("status %d body %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	WriteJSON(rec, http.StatusCreated, map[string]int{"a": 1})
	if rec.Code != http.StatusCreated || rec.Body.String() != "{\"a\":1}\n" {
		t.Fatalf("status %d body %q", rec.Code, rec.Body)
	}
}

func TestHandleBothPrefixes(t *testing.T) {
	mux := http.NewServeMux()
	HandleFunc(mux, "GET /api-jobs/{uuid}", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{
			"uuid":     r.PathValue("uuid"),
			"prefix":   Prefix(r),
			"location": URL(r, "", "/api-jobs/"+r.PathValue("uuid")),
		})
	})
	tests := []struct {
		method, path string
		status       int
		prefix       string
	}{
		{"GET", "/v1/api-jobs/j1", 200, "/v1"},
		{"GET", "/zstack/v1/api-jobs/j1", 200, "/zstack/v1"},
		{"GET", "/api-jobs/j1", 404, ""},
		{"POST", "/v1/api-jobs/j1", 405, ""},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, "http://api.example:8080"+tc.path, nil)
		mux.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, rec.Code, tc.status)
			continue
		}
		if tc.status != 200 {
			continue
		}
		var got map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := "http://api.example:8080" + tc.prefix + "/api-jobs/j1"
		if got["uuid"] != "j1" || got["prefix"] != tc.prefix || got["location"] != want {
			t.Errorf("%s: got %v, want prefix %s location %s", tc.path, got, tc.prefix, want)
		}
	}
}

func TestPatterns(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"GET /vm-instances", "GET /v1/vm-instances GET /zstack/v1/vm-instances"},
		{"/healthz", "/v1/healthz /zstack/v1/healthz"},
		{"PUT  /accounts/login", "PUT /v1/accounts/login PUT /zstack/v1/accounts/login"},
	}
	for _, tc := range tests {
		if got := strings.Join(Patterns(tc.in), " "); got != tc.want {
			t.Errorf("Patterns(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"GET vm-instances", "example.com/x", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Patterns(%q) did not panic", bad)
				}
			}()
			Patterns(bad)
		}()
	}
}

func TestURLBase(t *testing.T) {
	req := httptest.NewRequest("GET", "/zstack/v1/vm-instances", nil)
	if got := URL(req, "https://cloud.example/", "/api-jobs/x"); got != "https://cloud.example/zstack/v1/api-jobs/x" {
		t.Errorf("URL = %q", got)
	}
}

// A null element of a list (or a map) of structs with required fields is
// refused: it would decode to a struct without them.
func TestDecodeParamsNullElementWithRequiredFields(t *testing.T) {
	type named struct {
		Name string `json:"name" api:"required"`
	}
	type params struct {
		Items []named          `json:"items"`
		Ptrs  []*named         `json:"ptrs"`
		ByKey map[string]named `json:"byKey"`
		Plain []disk           `json:"plain"`
	}
	for _, tc := range []struct{ body, details string }{
		{`{"params": {"items": [{"name": "a"}, null]}}`, "params.items[1] must be an object with name, not null"},
		{`{"params": {"ptrs": [null]}}`, "params.ptrs[0] must be an object with name, not null"},
		{`{"params": {"byKey": {"k": null}}}`, "params.byKey.k must be an object with name, not null"},
		{`{"params": {"items": [{}]}}`, "params.items[0].name is required"},
	} {
		var p params
		_, err := DecodeParams(request(tc.body), &p)
		wantError(t, err, errcode.InvalidArgument, tc.details)
	}
	// Without required fields a null element is the zero value, as before.
	var p params
	if _, err := DecodeParams(request(`{"params": {"plain": [null, {"size": 1}]}}`), &p); err != nil || len(p.Plain) != 2 {
		t.Fatalf("null element of a struct without required fields: %v %+v", err, p)
	}
}
