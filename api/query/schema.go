package query

import (
	"fmt"
	"regexp"
	"strings"
)

// Type is the type of a queryable field; it decides how q values are parsed
// and which operators apply.
type Type int

// The field types.
const (
	String Type = iota + 1 // any text; every operator
	Int                    // a base-10 64-bit integer
	Bool                   // true or false
	Time                   // see the package doc for the accepted forms
)

func (t Type) String() string {
	switch t {
	case String:
		return "string"
	case Int:
		return "integer"
	case Bool:
		return "boolean"
	case Time:
		return "time"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Field is one field of a resource's inventory as the API names it.
type Field struct {
	// Name is the API name, ZStack's camelCase: "uuid", "zoneUuid", "cpuNum".
	Name string
	// Column is the database column ("cpu_num", or "vm_instances.cpu_num" in
	// a join). Empty means the field can be named in fields= only: it is in
	// the inventory but cannot be filtered or sorted on.
	Column string
	// Type decides value parsing and the operators allowed.
	Type Type
	// Key marks a unique field (usually uuid). It is added as the last ORDER
	// BY key of every query, so that pages (limit/start) are stable. At
	// most one field may be Key.
	Key bool
}

// Schema is the whitelist of one resource: only the fields it lists can be
// queried, sorted on or projected. Build it once with NewSchema or
// MustSchema; it is immutable and safe for concurrent use.
type Schema struct {
	fields []Field
	byName map[string]Field
	key    *Field
}

var (
	validName   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
	validColumn = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
)

// NewSchema checks fields and returns their schema. Column names become SQL
// identifiers (quoted by GORM, never concatenated with user input), so they
// must be plain identifiers, optionally table-qualified.
func NewSchema(fields ...Field) (*Schema, error) {
	s := &Schema{byName: make(map[string]Field, len(fields))}
	for _, f := range fields {
		if !validName.MatchString(f.Name) {
			return nil, fmt.Errorf("query schema: field name %q: want letters, digits, '_' or '.', not starting with a digit", f.Name)
		}
		if _, dup := s.byName[f.Name]; dup {
			return nil, fmt.Errorf("query schema: field %q listed twice", f.Name)
		}
		if f.Column != "" {
			if !validColumn.MatchString(f.Column) {
				return nil, fmt.Errorf("query schema: field %q: column %q is not a plain identifier", f.Name, f.Column)
			}
			if f.Type < String || f.Type > Time {
				return nil, fmt.Errorf("query schema: field %q: invalid type %v", f.Name, f.Type)
			}
		}
		if f.Key {
			if s.key != nil {
				return nil, fmt.Errorf("query schema: fields %q and %q are both Key", s.key.Name, f.Name)
			}
			if f.Column == "" {
				return nil, fmt.Errorf("query schema: key field %q needs a column", f.Name)
			}
			k := f
			s.key = &k
		}
		s.fields = append(s.fields, f)
		s.byName[f.Name] = f
	}
	return s, nil
}

// MustSchema is NewSchema for schemas written in the code; it panics on an
// invalid one.
func MustSchema(fields ...Field) *Schema {
	s, err := NewSchema(fields...)
	if err != nil {
		panic(err)
	}
	return s
}

// Fields returns the schema's fields in the order given.
func (s *Schema) Fields() []Field {
	return append([]Field(nil), s.fields...)
}

// Field returns the field named name.
func (s *Schema) Field(name string) (Field, bool) {
	f, ok := s.byName[name]
	return f, ok
}

// queryable lists the names that can be filtered and sorted on.
func (s *Schema) queryable() string {
	var names []string
	for _, f := range s.fields {
		if f.Column != "" {
			names = append(names, f.Name)
		}
	}
	return strings.Join(names, ", ")
}

// all lists every field name, for fields=.
func (s *Schema) all() string {
	names := make([]string, len(s.fields))
	for i, f := range s.fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
