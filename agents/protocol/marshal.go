package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Marshal encodes v as JSON for the wire: like json.Marshal, except that
// object fields whose value is null are left out, and a null inside an
// array is an error (the Python agent cannot parse it, and dropping the
// element would silently shift the others).
func Marshal(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// Fast path: most bodies hold no null at all.
	if !bytes.Contains(data, []byte("null")) {
		return data, nil
	}
	clean, err := Clean(data)
	if err != nil {
		return nil, err
	}
	return clean, nil
}

// Clean re-encodes a JSON document without null object fields, and fails on
// a null inside an array. A document that is null itself is returned as is.
func Clean(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return data, nil
	}
	v, err := clean(v, "$")
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// Object decodes a JSON object (UseNumber, so integers keep their precision)
// with its null fields removed, failing on null inside an array. An empty
// document or null gives an empty map.
func Object(data []byte) (map[string]any, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a JSON object: %.40s", data)
	}
	if _, err := clean(obj, "$"); err != nil {
		return nil, err
	}
	return obj, nil
}

func clean(v any, at string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
				continue
			}
			c, err := clean(e, at+"."+k)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
	case []any:
		for i, e := range x {
			at := at + "[" + strconv.Itoa(i) + "]"
			if e == nil {
				return nil, fmt.Errorf("null inside a JSON array at %s (the Python agent cannot parse it)", at)
			}
			c, err := clean(e, at)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
	}
	return v, nil
}
