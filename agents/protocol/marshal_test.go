package protocol

import (
	"strings"
	"testing"
)

func TestMarshal(t *testing.T) {
	type inner struct {
		N *int `json:"n"`
	}
	one := 1
	tests := []struct {
		name    string
		in      any
		want    string
		wantErr string
	}{
		{name: "plain", in: map[string]any{"a": 1}, want: `{"a":1}`},
		{name: "null field omitted", in: struct {
			A *int   `json:"a"`
			B []int  `json:"b"`
			C string `json:"c"`
		}{C: "x"}, want: `{"c":"x"}`},
		{name: "nested null field omitted", in: map[string]any{"x": inner{}}, want: `{"x":{}}`},
		{name: "null in array", in: map[string]any{"xs": []*inner{{N: &one}, nil}}, wantErr: "$.xs[1]"},
		{name: "null in nested array", in: []any{[]any{1, nil}}, wantErr: "$[0][1]"},
		{name: "string holding null", in: map[string]any{"s": "null"}, want: `{"s":"null"}`},
		{name: "big integer kept", in: map[string]any{"n": int64(1) << 62, "z": nil}, want: `{"n":4611686018427387904}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Marshal(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Marshal = %s, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Marshal = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestObject(t *testing.T) {
	for _, in := range []string{"", "null", "  "} {
		m, err := Object([]byte(in))
		if err != nil || len(m) != 0 {
			t.Fatalf("Object(%q) = %v, %v; want empty map", in, m, err)
		}
	}
	if _, err := Object([]byte(`[1]`)); err == nil {
		t.Fatal("Object([1]) succeeded; want error")
	}
	m, err := Object([]byte(`{"a":null,"b":2}`))
	if err != nil || len(m) != 1 {
		t.Fatalf("Object = %v, %v", m, err)
	}
}
