package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

// inventory is one decoded inventory; numbers stay json.Number so that
// byte counts print exactly.
type inventory map[string]any

func decodeInventory(raw json.RawMessage) (inventory, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var inv inventory
	if err := dec.Decode(&inv); err != nil {
		return nil, fmt.Errorf("decode inventory: %w", err)
	}
	return inv, nil
}

// column is one column of a table.
type column struct {
	header string
	value  func(inventory) string
}

const none = "-"

// text renders a scalar field; "-" for a missing or empty one.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return none
	case string:
		if x == "" {
			return none
		}
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	data, _ := json.Marshal(v)
	return string(data)
}

func field(header, name string) column {
	return column{header, func(i inventory) string { return text(i[name]) }}
}

func sizeField(header, name string) column {
	return column{header, func(i inventory) string { return humanField(i[name]) }}
}

// ratio renders "avail/total" of two fields, sizes when human is set.
func ratio(header, avail, total string, human bool) column {
	return column{header, func(i inventory) string {
		if i[avail] == nil && i[total] == nil {
			return none
		}
		if human {
			return humanField(i[avail]) + "/" + humanField(i[total])
		}
		return text(i[avail]) + "/" + text(i[total])
	}}
}

func humanField(v any) string {
	n, ok := v.(json.Number)
	if !ok {
		return text(v)
	}
	b, err := n.Int64()
	if err != nil {
		return n.String()
	}
	return humanSize(b)
}

// listField joins one field of every object of a list field ("vmNics" ->
// "ip"), or renders it with f.
func listField(header, list string, f func(map[string]any) string) column {
	return column{header, func(i inventory) string {
		items, _ := i[list].([]any)
		var parts []string
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				if s := f(m); s != "" && s != none {
					parts = append(parts, s)
				}
			}
		}
		if len(parts) == 0 {
			return none
		}
		return strings.Join(parts, ",")
	}}
}

// stringsField joins a list of strings ("attachedClusterUuids").
func stringsField(header, list string) column {
	return column{header, func(i inventory) string {
		items, _ := i[list].([]any)
		var parts []string
		for _, it := range items {
			if s, ok := it.(string); ok && s != "" {
				parts = append(parts, s)
			}
		}
		if len(parts) == 0 {
			return none
		}
		return strings.Join(parts, ",")
	}}
}

// genericColumns are used for an inventory of an unknown kind (ctl wait)
// and for --fields.
func genericColumns(fields ...string) []column {
	if len(fields) == 0 {
		fields = []string{"uuid", "name", "state"}
	}
	cols := make([]column, len(fields))
	for i, f := range fields {
		cols[i] = field(headerOf(f), f)
	}
	return cols
}

// headerOf turns a field name into a header: "managementIp" -> "MANAGEMENT IP".
func headerOf(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// printTable writes the inventories as an aligned table with a header.
func printTable(w io.Writer, cols []column, invs []inventory) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c.header)
	}
	fmt.Fprintln(tw)
	for _, inv := range invs {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, strings.ReplaceAll(c.value(inv), "\t", " "))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printJSON writes v indented; json.RawMessage parts keep their key order.
func printJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

var sizeUnits = []string{"B", "K", "M", "G", "T", "P", "E"}

// humanSize renders bytes in binary units: 1073741824 -> "1G",
// 1610612736 -> "1.5G", 512 -> "512B".
func humanSize(b int64) string {
	if b < 0 {
		return "-" + humanSize(-b)
	}
	v, u := float64(b), 0
	// Compare the value as printed, so 1073741823 is "1G", not "1024M".
	for math.Round(v*10)/10 >= 1024 && u < len(sizeUnits)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return strconv.FormatInt(b, 10) + "B"
	}
	if r := math.Round(v*10) / 10; r == math.Trunc(r) {
		return strconv.FormatFloat(r, 'f', 0, 64) + sizeUnits[u]
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + sizeUnits[u]
}

var sizePattern = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*([KMGTPE]?)(I?B?)$`)

// parseSize reads a size: bytes ("1048576") or a number with a binary
// unit K, M, G, T, P, E, optionally followed by "i", "B" or "iB", any case
// ("512M", "1.5G", "2GiB", "1gb" all count 1024-based).
func parseSize(s string) (int64, error) {
	m := sizePattern.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil || (m[2] == "" && strings.HasPrefix(m[3], "I")) {
		return 0, fmt.Errorf("%q is not a size; use bytes or a number with K, M, G, T (1024-based), e.g. 512M or 1.5G", s)
	}
	mult := 1.0
	for i, u := range sizeUnits {
		if u == m[2] && u != "B" {
			mult = math.Pow(1024, float64(i))
		}
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w", s, err)
	}
	v := n * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	return int64(v), nil
}
