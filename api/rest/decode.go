package rest

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"mplane/errcode"
)

// MaxBodyBytes is the largest request body the decoders read (1 MiB).
const MaxBodyBytes = 1 << 20

// Tags are the optional top-level "systemTags" and "userTags" that ZStack
// clients may send beside "params" or an action.
type Tags struct {
	SystemTags []string `json:"systemTags,omitempty"`
	UserTags   []string `json:"userTags,omitempty"`
}

// Validator is implemented by a decoded struct that checks itself after
// decoding. A plain error it returns becomes errcode.InvalidArgument; an
// *errcode.Error is kept as is.
type Validator interface {
	Validate() error
}

const paramsShape = `{"params": {...}}`

// DecodeParams reads a create-style body, {"params": {...}} with optional
// "systemTags" and "userTags", and decodes "params" strictly into dst, a
// non-nil pointer to a struct (see the package doc for what strict means).
// Every error is an *errcode.Error, InvalidArgument for the caller's
// mistakes.
func DecodeParams(r *http.Request, dst any) (Tags, error) {
	top, err := readObject(r, paramsShape)
	if err != nil {
		return Tags{}, err
	}
	for _, k := range sortedKeys(top) {
		if k != "params" && !isTagKey(k) {
			return Tags{}, invalid(`unknown top-level field %q; expected %s with optional "systemTags" and "userTags"`, k, paramsShape)
		}
	}
	raw, ok := top["params"]
	if !ok {
		return Tags{}, invalid(`missing "params"; expected %s`, paramsShape)
	}
	tags, err := decodeTags(top)
	if err != nil {
		return Tags{}, err
	}
	if err := decodeInto(raw, "params", dst); err != nil {
		return Tags{}, err
	}
	return tags, nil
}

// readObject reads r's body as one JSON object and returns its members.
// shape describes the expected body for messages.
func readObject(r *http.Request, shape string) (map[string]json.RawMessage, error) {
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, invalid("request body is empty; expected %s", shape)
	}
	if !utf8.Valid(data) {
		return nil, invalid("request body is not valid UTF-8")
	}
	if err := noDuplicateKeys(data); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, malformed(data, syn)
		case errors.As(err, &typ):
			return nil, invalid("request body must be a JSON object like %s, got %s", shape, typ.Value)
		}
		return nil, invalid("request body: %v", err)
	}
	if top == nil {
		return nil, invalid("request body must be a JSON object like %s, got null", shape)
	}
	return top, nil
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, invalid("request body is larger than %d bytes", tooBig.Limit)
		}
		return nil, invalid("read request body: %v", err)
	}
	if len(data) > MaxBodyBytes {
		return nil, invalid("request body is larger than %d bytes", MaxBodyBytes)
	}
	return data, nil
}

// malformed reports a JSON syntax error with its position.
func malformed(data []byte, e *json.SyntaxError) *errcode.Error {
	// Offset counts the bytes read, the offending one included.
	pos := min(max(int(e.Offset)-1, 0), len(data))
	line := 1 + bytes.Count(data[:pos], []byte("\n"))
	col := pos - bytes.LastIndexByte(data[:pos], '\n')
	return invalid("malformed JSON at line %d, column %d (byte offset %d): %s", line, col, e.Offset, e.Error())
}

func isTagKey(k string) bool { return k == "systemTags" || k == "userTags" }

func decodeTags(top map[string]json.RawMessage) (Tags, error) {
	var t Tags
	if raw, ok := top["systemTags"]; ok {
		if err := decodeInto(raw, "systemTags", &t.SystemTags); err != nil {
			return Tags{}, err
		}
	}
	if raw, ok := top["userTags"]; ok {
		if err := decodeInto(raw, "userTags", &t.UserTags); err != nil {
			return Tags{}, err
		}
	}
	return t, nil
}

// decodeInto decodes raw strictly into dst; path names raw in messages.
func decodeInto(raw json.RawMessage, path string, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errcode.New(errcode.Internal, "decode %s: target must be a non-nil pointer, got %T", path, dst)
	}
	t := rv.Type().Elem()
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) && indirect(t).Kind() == reflect.Struct {
		return invalid("%s must be a JSON object, got null", path)
	}
	if err := walk(raw, t, path); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typ *json.UnmarshalTypeError
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &typ):
			field := path
			if typ.Field != "" {
				field = path + "." + typ.Field
			}
			return invalid("%s must be %s, got %s", field, describe(typ.Type), typ.Value)
		case errors.As(err, &syn):
			return malformed(raw, syn)
		}
		return invalid("%s: %v", path, err)
	}
	if v, ok := dst.(Validator); ok {
		if err := v.Validate(); err != nil {
			var e *errcode.Error
			if errors.As(err, &e) {
				return err
			}
			return invalid("%s: %v", path, err)
		}
	}
	return nil
}

func indirect(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk checks, before encoding/json runs, what encoding/json cannot: that
// every member name of every object exists in the target struct with the
// exact spelling, and that required fields are present. It reports the
// full path of the offending member. Values whose type decodes itself
// (json.Unmarshaler, encoding.TextUnmarshaler) and interface values are not
// looked into. A raw value of the wrong JSON kind is left to encoding/json,
// which reports the type error.
func walk(raw json.RawMessage, t reflect.Type, path string) error {
	t = indirect(t)
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		var members map[string]json.RawMessage
		if json.Unmarshal(raw, &members) != nil || members == nil {
			return nil
		}
		info := structInfoOf(t)
		for _, name := range sortedKeys(members) {
			f, ok := info.byName[name]
			if !ok {
				return invalid("%s: unknown field %q; allowed fields: %s", path, name, strings.Join(info.names, ", "))
			}
			if err := checkMember(name, members[name], path+"."+name); err != nil {
				return err
			}
			if err := walk(members[name], f.typ, path+"."+name); err != nil {
				return err
			}
		}
		for _, name := range info.required {
			v, ok := members[name]
			if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				return invalid("%s.%s is required", path, name)
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte is a base64 string
		}
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return nil
		}
		for i, e := range elems {
			if err := walkElem(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		var members map[string]json.RawMessage
		if json.Unmarshal(raw, &members) != nil {
			return nil
		}
		for _, k := range sortedKeys(members) {
			if err := walkElem(members[k], t.Elem(), path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// walkElem is walk for an element of a list or a map: a null one of a
// struct type with required fields is refused (it would be a struct
// without them), as a null required field is.
func walkElem(raw json.RawMessage, t reflect.Type, path string) error {
	if et := indirect(t); et.Kind() == reflect.Struct && bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if info := structInfoOf(et); len(info.required) > 0 {
			return invalid("%s must be an object with %s, not null", path, strings.Join(info.required, ", "))
		}
	}
	return walk(raw, t, path)
}

type fieldInfo struct {
	typ reflect.Type
}

type structInfo struct {
	byName   map[string]fieldInfo
	names    []string // declaration order, for messages
	required []string
}

var structInfos sync.Map // reflect.Type -> *structInfo

func structInfoOf(t reflect.Type) *structInfo {
	if v, ok := structInfos.Load(t); ok {
		return v.(*structInfo)
	}
	info := &structInfo{byName: map[string]fieldInfo{}}
	collectFields(t, info, 0)
	v, _ := structInfos.LoadOrStore(t, info)
	return v.(*structInfo)
}

// collectFields follows encoding/json's naming: the json tag's name, else
// the Go field name; "-" skips; an embedded struct without a tag name has
// its fields promoted.
func collectFields(t reflect.Type, info *structInfo, depth int) {
	if depth > 8 {
		return
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			if et := indirect(sf.Type); et.Kind() == reflect.Struct {
				collectFields(et, info, depth+1)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, dup := info.byName[name]; dup {
			continue // the shallower field wins, as in encoding/json
		}
		info.byName[name] = fieldInfo{typ: sf.Type}
		info.names = append(info.names, name)
		if slices.Contains(strings.Split(sf.Tag.Get("api"), ","), "required") {
			info.required = append(info.required, name)
		}
	}
}

// describe names the JSON type a Go type decodes from, for messages.
func describe(t reflect.Type) string {
	t = indirect(t)
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if t.Kind() >= reflect.Uint {
			return "a non-negative integer"
		}
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
