package query

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Reply is the answer of GET /v1/<resources>: {"inventories": [...]}, with
// "total" when the query asked for it; {"total": N} alone for count=true.
type Reply struct {
	Inventories json.RawMessage `json:"inventories,omitempty"`
	Total       *int64          `json:"total,omitempty"`
}

// Reply shapes the answer to q: inventories (a slice of structs or maps
// that encode to JSON objects) projected on q.Fields, and total when q
// asked for it. A nil slice is answered as [].
func (q *Query) Reply(inventories any, total int64) (Reply, error) {
	if q.Count {
		return Reply{Total: &total}, nil
	}
	inv, err := Project(inventories, q.Fields)
	if err != nil {
		return Reply{}, err
	}
	if bytes.Equal(inv, []byte("null")) {
		inv = json.RawMessage("[]")
	}
	r := Reply{Inventories: inv}
	if q.ReplyWithCount {
		r.Total = &total
	}
	return r, nil
}

// Project encodes v, a JSON object or an array of them, keeping only the
// members named in fields (all of them when fields is empty). Names are
// the JSON names. Projection works on the encoded inventory, so it applies
// to any inventory type, including computed and nested members.
func Project(v any, fields []string) (json.RawMessage, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("project inventories: %w", err)
	}
	if len(fields) == 0 || bytes.Equal(data, []byte("null")) {
		return data, nil
	}
	keep := func(raw json.RawMessage) (map[string]json.RawMessage, error) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("project inventories: %s is not a JSON object", kind(raw))
		}
		out := make(map[string]json.RawMessage, len(fields))
		for _, f := range fields {
			if m, ok := obj[f]; ok {
				out[f] = m
			}
		}
		return out, nil
	}
	switch data[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return nil, fmt.Errorf("project inventories: %w", err)
		}
		out := make([]map[string]json.RawMessage, len(items))
		for i, it := range items {
			if out[i], err = keep(it); err != nil {
				return nil, err
			}
		}
		return json.Marshal(out)
	case '{':
		obj, err := keep(data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(obj)
	}
	return nil, fmt.Errorf("project inventories: %s is not a JSON object or array", kind(data))
}

func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "empty value"
	}
	switch raw[0] {
	case '[':
		return "an array"
	case '{':
		return "an object"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
