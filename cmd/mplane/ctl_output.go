package main

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

// ctlInventory is one decoded inventory; numbers stay json.Number so that
// byte counts print exactly.
type ctlInventory map[string]any

func ctlDecodeInventory(raw json.RawMessage) (ctlInventory, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var inv ctlInventory
	if err := dec.Decode(&inv); err != nil {
		return nil, fmt.Errorf("decode inventory: %w", err)
	}
	return inv, nil
}

// ctlColumn is one column of a table.
type ctlColumn struct {
	header string
	value  func(ctlInventory) string
}

const ctlNone = "-"

// ctlText renders a scalar field; "-" for a missing or empty one.
func ctlText(v any) string {
	switch x := v.(type) {
	case nil:
		return ctlNone
	case string:
		if x == "" {
			return ctlNone
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

func ctlField(header, name string) ctlColumn {
	return ctlColumn{header, func(i ctlInventory) string { return ctlText(i[name]) }}
}

func ctlSizeField(header, name string) ctlColumn {
	return ctlColumn{header, func(i ctlInventory) string { return ctlHumanField(i[name]) }}
}

// ctlRatio renders "avail/total" of two fields, sizes when human is set.
func ctlRatio(header, avail, total string, human bool) ctlColumn {
	return ctlColumn{header, func(i ctlInventory) string {
		if i[avail] == nil && i[total] == nil {
			return ctlNone
		}
		if human {
			return ctlHumanField(i[avail]) + "/" + ctlHumanField(i[total])
		}
		return ctlText(i[avail]) + "/" + ctlText(i[total])
	}}
}

func ctlHumanField(v any) string {
	n, ok := v.(json.Number)
	if !ok {
		return ctlText(v)
	}
	b, err := n.Int64()
	if err != nil {
		return n.String()
	}
	return ctlHumanSize(b)
}

// ctlListField joins one field of every object of a list field ("vmNics" ->
// "ip"), or renders it with f.
func ctlListField(header, list string, f func(map[string]any) string) ctlColumn {
	return ctlColumn{header, func(i ctlInventory) string {
		items, _ := i[list].([]any)
		var parts []string
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				if s := f(m); s != "" && s != ctlNone {
					parts = append(parts, s)
				}
			}
		}
		if len(parts) == 0 {
			return ctlNone
		}
		return strings.Join(parts, ",")
	}}
}

// ctlGenericColumns are used for an inventory of an unknown kind (ctl wait)
// and for --fields.
func ctlGenericColumns(fields ...string) []ctlColumn {
	if len(fields) == 0 {
		fields = []string{"uuid", "name", "state"}
	}
	cols := make([]ctlColumn, len(fields))
	for i, f := range fields {
		cols[i] = ctlField(ctlHeaderOf(f), f)
	}
	return cols
}

// ctlHeaderOf turns a field name into a header: "managementIp" -> "MANAGEMENT IP".
func ctlHeaderOf(name string) string {
	var b strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// ctlPrintTable writes the inventories as an aligned table with a header.
func ctlPrintTable(w io.Writer, cols []ctlColumn, invs []ctlInventory) error {
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

// ctlPrintJSON writes v indented; json.RawMessage parts keep their key order.
func ctlPrintJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

var ctlSizeUnits = []string{"B", "K", "M", "G", "T", "P", "E"}

// ctlHumanSize renders bytes in binary units: 1073741824 -> "1G",
// 1610612736 -> "1.5G", 512 -> "512B".
func ctlHumanSize(b int64) string {
	if b < 0 {
		return "-" + ctlHumanSize(-b)
	}
	v, u := float64(b), 0
	// Compare the value as printed, so 1073741823 is "1G", not "1024M".
	for math.Round(v*10)/10 >= 1024 && u < len(ctlSizeUnits)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return strconv.FormatInt(b, 10) + "B"
	}
	if r := math.Round(v*10) / 10; r == math.Trunc(r) {
		return strconv.FormatFloat(r, 'f', 0, 64) + ctlSizeUnits[u]
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + ctlSizeUnits[u]
}

var ctlSizePattern = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*([KMGTPE]?)(I?B?)$`)

// ctlParseSize reads a size: bytes ("1048576") or a number with a binary
// unit K, M, G, T, P, E, optionally followed by "i", "B" or "iB", any case
// ("512M", "1.5G", "2GiB", "1gb" all count 1024-based).
func ctlParseSize(s string) (int64, error) {
	m := ctlSizePattern.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil || (m[2] == "" && strings.HasPrefix(m[3], "I")) {
		return 0, fmt.Errorf("%q is not a size; use bytes or a number with K, M, G, T (1024-based), e.g. 512M or 1.5G", s)
	}
	mult := 1.0
	for i, u := range ctlSizeUnits {
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
