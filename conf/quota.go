package conf

import (
	"fmt"
	"strconv"
	"strings"
)

// QuotaNames are the quotas of an account, in ZStack's names.
var QuotaNames = []string{"vm.num", "vm.cpuNum", "vm.memorySize", "volume.data.num", "volume.capacity", "snapshot.volume.num"}

// ParseQuotas reads a quota_defaults value, "name=value,..." with names of
// QuotaNames and values >= 0. Names left out are absent from the map.
func ParseQuotas(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		known := false
		for _, n := range QuotaNames {
			known = known || n == name
		}
		if !ok || !known {
			return nil, fmt.Errorf("quota %q: expected name=value with a name among %s", part, strings.Join(QuotaNames, ", "))
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("quota %s: value must be an integer >= 0, got %q", name, val)
		}
		out[name] = n
	}
	return out, nil
}
