package uid

import "testing"

func TestNewIsUniqueAndValid(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := New()
		if !Valid(id) {
			t.Fatalf("New() = %q, not 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "ABCDEF0123456789abcdef0123456789", "0123", "0123456789abcdef0123456789abcdeg", "01234567-89ab-cdef-0123-456789abcdef"} {
		if Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
}
