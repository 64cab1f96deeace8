package rest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// Action is a decoded action body, {"<Name>": {...}}, as sent to
// PUT /v1/<resources>/{uuid}/actions.
type Action struct {
	Name string
	// Body is the JSON object under Name, always an object.
	Body json.RawMessage
	Tags Tags
}

// DecodeAction reads an action body: a JSON object with exactly one key,
// the action's name, which must be one of valid, whose value is a JSON
// object; "systemTags" and "userTags" may stand beside it. Decode the
// action's own fields with Action.Decode once the name is known.
func DecodeAction(r *http.Request, valid ...string) (Action, error) {
	shape := `{"<action>": {...}}`
	if len(valid) == 1 {
		shape = `{"` + valid[0] + `": {...}}`
	}
	top, err := readObject(r, shape)
	if err != nil {
		return Action{}, err
	}
	var names []string
	for _, k := range sortedKeys(top) {
		if !isTagKey(k) {
			names = append(names, k)
		}
	}
	validList := strings.Join(valid, ", ")
	switch {
	case len(names) == 0:
		return Action{}, invalid("missing action: the body must have exactly one key, one of: %s", validList)
	case len(names) > 1:
		return Action{}, invalid("expected exactly one action, got %d (%s); valid actions: %s", len(names), strings.Join(names, ", "), validList)
	}
	name := names[0]
	if !slices.Contains(valid, name) {
		return Action{}, invalid("unknown action %q; valid actions: %s", name, validList)
	}
	body := bytes.TrimSpace(top[name])
	if len(body) == 0 || body[0] != '{' {
		return Action{}, invalid("%s must be a JSON object, got %s", name, jsonKind(body))
	}
	tags, err := decodeTags(top)
	if err != nil {
		return Action{}, err
	}
	return Action{Name: name, Body: json.RawMessage(body), Tags: tags}, nil
}

// Decode decodes the action's fields strictly into dst, a non-nil pointer
// to a struct; paths in messages start with the action's name
// ("stopVmInstance.type must be a string, got number").
func (a Action) Decode(dst any) error {
	return decodeInto(a.Body, a.Name, dst)
}

// jsonKind names the kind of a valid JSON value from its first byte.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}
