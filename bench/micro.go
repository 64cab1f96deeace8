package bench

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// Micro is one line of `go test -bench` output.
type Micro struct {
	Package string `json:"package"`
	Name    string `json:"name"`
	// Metrics are the line's value/unit pairs in order ("ns/op",
	// "calls/s", "B/op" ...).
	Metrics []MicroMetric `json:"metrics"`
}

// MicroMetric is one value of a benchmark line.
type MicroMetric struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Metric returns the value of unit, if the line has it.
func (m Micro) Metric(unit string) (float64, bool) {
	for _, x := range m.Metrics {
		if x.Unit == unit {
			return x.Value, true
		}
	}
	return 0, false
}

// ParseMicro reads `go test -bench` output: the "pkg:" lines name the
// package of the Benchmark lines that follow. Other lines are skipped.
func ParseMicro(r io.Reader) ([]Micro, error) {
	var out []Micro
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// name, iterations, then value unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		m := Micro{Package: pkg, Name: trimProcs(f[0])}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				m.Metrics = nil
				break
			}
			m.Metrics = append(m.Metrics, MicroMetric{Value: v, Unit: f[i+1]})
		}
		if len(m.Metrics) > 0 {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// trimProcs drops the -GOMAXPROCS suffix of a benchmark name.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}
