package query

import (
	"testing"
	"time"
)

type modelBase struct {
	UUID       string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name       string    `gorm:"column:name" json:"name"`
	CreateDate time.Time `gorm:"column:create_date" json:"createDate"`
}

type modelChild struct {
	UUID string `json:"uuid"`
}

type testModel struct {
	modelBase
	TotalCPU int64        `gorm:"column:total_cpu;not null" json:"totalCpuCapacity"`
	Enabled  bool         `json:"enabled,omitempty"`
	Vlan     *int         `gorm:"column:vlan" json:"vlan,omitempty"`
	Parent   *string      `gorm:"column:parent_uuid" json:"parentUuid,omitempty"`
	Secret   string       `gorm:"column:secret" json:"-"`
	Virtual  string       `gorm:"-" json:"virtual"`
	Children []modelChild `gorm:"foreignKey:UUID" json:"children"`
}

func TestSchemaOfDerivesFieldsFromTags(t *testing.T) {
	s := SchemaOf[testModel]()
	want := []Field{
		{Name: "uuid", Column: "uuid", Type: String, Key: true},
		{Name: "name", Column: "name", Type: String},
		{Name: "createDate", Column: "create_date", Type: Time},
		{Name: "totalCpuCapacity", Column: "total_cpu", Type: Int},
		{Name: "enabled", Column: "enabled", Type: Bool},
		{Name: "vlan", Column: "vlan", Type: Int},
		{Name: "parentUuid", Column: "parent_uuid", Type: String},
		{Name: "virtual"},
		{Name: "children"},
	}
	got := s.Fields()
	if len(got) != len(want) {
		t.Fatalf("fields %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, ok := s.Field("secret"); ok {
		t.Error("a json:\"-\" field is in the schema")
	}
	if SchemaOf[testModel]() != s {
		t.Error("SchemaOf is not cached")
	}
	// The derived schema parses queries like a written one.
	if _, err := Parse(s, map[string][]string{"q": {"totalCpuCapacity>=2"}, "sort": {"-createDate"}}); err != nil {
		t.Fatal(err)
	}
	// A nullable column is its element's type, with "is null" for NULL.
	if _, err := Parse(s, map[string][]string{"q": {"vlan>=10", "parentUuid is null"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(s, map[string][]string{"q": {"vlan=x"}}); err == nil {
		t.Fatal("vlan=x was accepted for an integer field")
	}
	if _, err := Parse(s, map[string][]string{"q": {"children=x"}}); err == nil {
		t.Fatal("an association was accepted in q=")
	}
}
