package bench

import (
	"math/rand/v2"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", durations(7), 1, 7 * time.Millisecond},
		{"one value p100", durations(7), 100, 7 * time.Millisecond},
		{"median of two is the lower", durations(1, 2), 50, time.Millisecond},
		{"median of four", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"median of five", durations(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p90 of ten", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p99 of ten is the max", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 of 1..100", hundred, 100, 100 * time.Millisecond},
		{"p99.9 of 1..1000 (float rounding)", thousand, 99.9, 999 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, time.Millisecond},
		{"p above 100 is clamped to the max", hundred, 150, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	if got := Summarize(nil); got != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
	// 1..100 ms shuffled: Summarize sorts a copy and leaves the input alone.
	in := make([]time.Duration, 100)
	for i := range in {
		in[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	first := in[0]
	got := Summarize(in)
	want := Summary{Count: 100, P50: 50, P90: 90, P99: 99, Max: 100, Mean: 50.5}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if in[0] != first {
		t.Error("Summarize reordered its input")
	}
	// Sub-millisecond values keep microsecond precision.
	if got := Summarize([]time.Duration{1500 * time.Microsecond}); got.P50 != 1.5 || got.Max != 1.5 {
		t.Errorf("1.5 ms summarized as %+v", got)
	}
}
