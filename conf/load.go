package conf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// BindFlags registers one flag per setting on fs, plus --config for the
// config file path. Defaults shown in help come from Default(); they only
// apply through Default itself, since Load reads a flag only when it was set.
func BindFlags(fs *pflag.FlagSet) {
	d := Default()
	fs.String(configFlag, "", "path to a YAML config file (env "+configEnv+")")
	for _, f := range fields {
		usage := f.usage + " (env " + f.env() + ")"
		switch p := f.ptr(&d).(type) {
		case *string:
			if f.secret {
				// Keep the default out of --help; it is empty anyway.
				fs.String(f.flag(), "", usage)
			} else {
				fs.String(f.flag(), *p, usage)
			}
		case *int:
			fs.Int(f.flag(), *p, usage)
		case *time.Duration:
			fs.Duration(f.flag(), *p, usage)
		}
	}
}

// Load builds the Config: Default(), then the YAML file, then MPLANE_*
// variables from environ, then the flags in fs that were set on the command
// line. It returns a validated Config, or an error listing every problem.
//
// The config file is path if non-empty, else the --config flag if set, else
// $MPLANE_CONFIG from environ, else none. A named file that does not exist
// is an error. fs may be nil, and may lack some of the flags BindFlags
// registers. environ is in os.Environ() form; an empty variable counts as
// unset; MPLANE_* variables that name no setting are ignored (tests set
// MPLANE_TEST_*).
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, error) {
	env := parseEnviron(environ)
	if path == "" && fs != nil && fs.Changed(configFlag) {
		if fl := fs.Lookup(configFlag); fl != nil {
			path = fl.Value.String()
		}
	}
	if path == "" {
		path = env[configEnv]
	}

	c := Default()
	var errs []error
	if path != "" {
		errs = append(errs, loadFile(&c, path)...)
	}
	errs = append(errs, loadEnv(&c, env)...)
	errs = append(errs, loadFlags(&c, fs)...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseEnviron turns KEY=VALUE pairs into a map. The first occurrence of a
// key wins, as with os.Getenv.
func parseEnviron(environ []string) map[string]string {
	env := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, dup := env[k]; !dup {
			env[k] = v
		}
	}
	return env
}

func loadFile(c *Config, path string) []error {
	data, err := os.ReadFile(path)
	if err != nil {
		return []error{fmt.Errorf("read config file: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file: nothing to set
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("config file %s line %d: want a mapping of key: value at the top level", path, root.Line)}
	}

	var errs []error
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		f, ok := fieldByKey(k.Value)
		if !ok {
			errs = append(errs, fmt.Errorf("config file %s line %d: unknown key %q; known keys: %s", path, k.Line, k.Value, knownKeys()))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			errs = append(errs, fmt.Errorf("config file %s line %d: key %q already given on line %d", path, k.Line, k.Value, line))
			continue
		}
		seen[k.Value] = k.Line
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("config file %s line %d: %s: want a single value, not a list or mapping", path, v.Line, f.key))
			continue
		}
		if v.ShortTag() == "!!null" {
			continue // "key:" with no value leaves the default
		}
		if err := f.set(c, v.Value); err != nil {
			errs = append(errs, fmt.Errorf("config file %s line %d: %s: %w", path, v.Line, f.key, err))
		}
	}
	return errs
}

func loadEnv(c *Config, env map[string]string) []error {
	var errs []error
	for _, f := range fields {
		v := env[f.env()]
		if v == "" {
			continue
		}
		if err := f.set(c, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s: %w", f.env(), err))
		}
	}
	return errs
}

func loadFlags(c *Config, fs *pflag.FlagSet) []error {
	if fs == nil {
		return nil
	}
	var errs []error
	for _, f := range fields {
		fl := fs.Lookup(f.flag())
		if fl == nil || !fl.Changed {
			continue
		}
		if err := f.set(c, fl.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("flag --%s: %w", f.flag(), err))
		}
	}
	return errs
}
