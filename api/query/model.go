package query

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm/schema"
)

var (
	modelMu      sync.Mutex
	modelSchemas = map[reflect.Type]*Schema{}
	naming       = schema.NamingStrategy{}
	timeType     = reflect.TypeOf(time.Time{})
)

// SchemaOf derives the query schema of a GORM model whose JSON form is the
// inventory, so the API names and the columns are written once, in the
// model's tags:
//
//   - every exported field with a JSON name (not "-") is a field of the
//     schema, under that name; embedded structs are flattened, as
//     encoding/json and GORM flatten them;
//   - its column is the gorm tag's column (or GORM's default name); a field
//     tagged gorm:"-", and a slice or struct (an association such as a
//     VM's NICs), can be named in fields= only;
//   - strings are String, integers Int, booleans Bool, time.Time Time; a
//     pointer to one of them (a nullable column, "is null" matches its
//     NULLs) is its element's type;
//   - the primaryKey field is the Key.
//
// The result is cached per type. It panics on a model it cannot describe
// (a programming error found at start-up, not a request's fault).
func SchemaOf[T any]() *Schema {
	t := reflect.TypeFor[T]()
	modelMu.Lock()
	defer modelMu.Unlock()
	if s, ok := modelSchemas[t]; ok {
		return s
	}
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("query.SchemaOf: %v is not a struct", t))
	}
	var fields []Field
	collectModel(t, &fields)
	s, err := NewSchema(fields...)
	if err != nil {
		panic(fmt.Sprintf("query.SchemaOf[%v]: %v", t, err))
	}
	modelSchemas[t] = s
	return s
}

func collectModel(t reflect.Type, out *[]Field) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		jsonName, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if jsonName == "-" {
			continue
		}
		if sf.Anonymous && jsonName == "" && sf.Type.Kind() == reflect.Struct {
			collectModel(sf.Type, out)
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if jsonName == "" {
			jsonName = sf.Name
		}
		f := Field{Name: jsonName}
		tags := schema.ParseTagSetting(sf.Tag.Get("gorm"), ";")
		_, ignored := tags["-"]
		if typ, ok := fieldType(sf.Type); ok && !ignored {
			f.Type = typ
			f.Column = tags["COLUMN"]
			if f.Column == "" {
				f.Column = naming.ColumnName("", sf.Name)
			}
			_, pk := tags["PRIMARYKEY"]
			_, pk2 := tags["PRIMARY_KEY"]
			f.Key = pk || pk2
		}
		*out = append(*out, f)
	}
}

func fieldType(t reflect.Type) (Type, bool) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeType {
		return Time, true
	}
	switch t.Kind() {
	case reflect.String:
		return String, true
	case reflect.Bool:
		return Bool, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return Int, true
	}
	return 0, false
}
