package conf

import "fmt"

// Setting is one setting of a Config as an operator sees it (the admin
// command `config show`).
type Setting struct {
	Key string `json:"key"`
	// Value is the value as LogValue shows it: secrets are redacted.
	Value       string `json:"value"`
	Description string `json:"description"`
}

// Settings lists every setting of c in the order of the documentation,
// secrets redacted.
func (c Config) Settings() []Setting {
	out := make([]Setting, len(fields))
	for i, f := range fields {
		out[i] = Setting{Key: f.key, Value: f.display(&c), Description: f.usage}
	}
	return out
}

// Keys lists the names of the settings (the YAML keys), in the order of the
// documentation.
func Keys() []string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return keys
}

// With returns c with the setting key parsed from value, for a change made
// at run time. It reports an unknown key, listing the known ones, and a
// value of the wrong form, naming the form; it does not run Validate.
func (c Config) With(key, value string) (Config, error) {
	f, ok := fieldByKey(key)
	if !ok {
		return c, fmt.Errorf("unknown setting %q; known settings: %s", key, knownKeys())
	}
	if err := f.set(&c, value); err != nil {
		return c, fmt.Errorf("%s: %w", key, err)
	}
	return c, nil
}

// Display is the value of the setting key in c as Settings shows it
// (secrets redacted), or "" for an unknown key.
func (c Config) Display(key string) string {
	f, ok := fieldByKey(key)
	if !ok {
		return ""
	}
	return f.display(&c)
}
