package vm

import (
	"slices"
	"testing"
	"time"

	"mplane/conf"
	"mplane/services/host"
)

// TestWeigh: each strategy's order of the hosts that fit, the preferred
// host first in every one.
func TestWeigh(t *testing.T) {
	// free is the host's free share of CPU and of memory, in quarters.
	hostWith := func(uuid string, free int64) host.HostVO {
		return host.HostVO{UUID: uuid, TotalCPUCapacity: 4, AvailableCPUCapacity: free,
			TotalMemoryCapacity: 4 << 30, AvailableMemoryCapacity: free << 30}
	}
	hosts := []host.HostVO{hostWith("half", 2), hostWith("empty", 4), hostWith("nearly-full", 1)}
	uuids := func(hs []host.HostVO) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.UUID)
		}
		return out
	}
	for _, tc := range []struct {
		strategy, prefer string
		want             []string
	}{
		{conf.AllocationLeastUsed, "", []string{"empty", "half", "nearly-full"}},
		{conf.AllocationMostUsed, "", []string{"nearly-full", "half", "empty"}},
		{conf.AllocationLeastUsed, "nearly-full", []string{"nearly-full", "empty", "half"}},
		{conf.AllocationMostUsed, "empty", []string{"empty", "nearly-full", "half"}},
		{conf.AllocationMostUsed, "elsewhere", []string{"nearly-full", "half", "empty"}}, // not a candidate
	} {
		if got := uuids(weigh(hosts, tc.prefer, tc.strategy)); !slices.Equal(got, tc.want) {
			t.Errorf("%s preferring %q: %q, want %q", tc.strategy, tc.prefer, got, tc.want)
		}
	}

	// Random: every host comes first now and then, whatever its use; the
	// preferred host always does.
	first := map[string]int{}
	for range 300 {
		first[weigh(hosts, "", conf.AllocationRandom)[0].UUID]++
		if got := weigh(hosts, "half", conf.AllocationRandom); got[0].UUID != "half" || len(got) != 3 {
			t.Fatalf("Random preferring half: %q", uuids(got))
		}
	}
	for _, h := range hosts {
		if first[h.UUID] == 0 {
			t.Errorf("Random never put %s first in 300 orders: %v", h.UUID, first)
		}
	}
}

// TestPruneEvery: the prune loop runs every half retention, at most every
// 10 minutes and at least every second.
func TestPruneEvery(t *testing.T) {
	for _, tc := range []struct{ retention, want time.Duration }{
		{time.Hour, 10 * time.Minute},
		{24 * time.Hour, 10 * time.Minute},
		{20 * time.Minute, 10 * time.Minute},
		{time.Minute, 30 * time.Second},
		{2 * time.Second, time.Second},
		{time.Millisecond, time.Second},
	} {
		if got := pruneEvery(tc.retention); got != tc.want {
			t.Errorf("pruneEvery(%s) = %s, want %s", tc.retention, got, tc.want)
		}
	}
}
