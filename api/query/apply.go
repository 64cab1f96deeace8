package query

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// likeEscape is the LIKE escape character. '!' rather than '\' because a
// backslash means different things in MySQL and SQLite string literals.
const likeEscape = "!"

// Filter adds q's conditions to db as one WHERE clause (ANDed with any the
// caller added). Values are bound parameters; columns come from the schema
// and are quoted by GORM.
func (q *Query) Filter(db *gorm.DB) *gorm.DB {
	if len(q.Conditions) == 0 {
		return db
	}
	exprs := make([]clause.Expression, 0, len(q.Conditions))
	for _, c := range q.Conditions {
		exprs = append(exprs, c.expression())
	}
	return db.Clauses(clause.Where{Exprs: exprs})
}

// Apply adds q's conditions, its order and its page (limit, start) to db.
// The schema's Key field is the last ORDER BY key whenever it is not
// already one, so consecutive pages neither repeat nor skip rows.
func (q *Query) Apply(db *gorm.DB) *gorm.DB {
	db = q.Filter(db)
	var cols []clause.OrderByColumn
	keyed := false
	for _, k := range q.Sort {
		cols = append(cols, clause.OrderByColumn{Column: column(k.Field), Desc: k.Desc})
		keyed = keyed || k.Field.Key
	}
	if q.schema != nil && q.schema.key != nil && !keyed {
		cols = append(cols, clause.OrderByColumn{Column: column(*q.schema.key)})
	}
	if len(cols) > 0 {
		db = db.Clauses(clause.OrderBy{Columns: cols})
	}
	return db.Limit(q.Limit).Offset(q.Start)
}

// Find runs q on db and returns the rows of the page and, when q asks for
// it (Count or ReplyWithCount), the total number of rows that match the
// conditions, regardless of limit and start. With Count no rows are read.
//
// db carries what the handler adds itself (a tenant's filter, joins); when
// it names no model or table, T's table is used. The two statements are not
// run in one transaction: under concurrent writes the total may differ from
// what the pages add up to.
func Find[T any](ctx context.Context, db *gorm.DB, q *Query) (rows []T, total int64, err error) {
	base := db.WithContext(ctx)
	if base.Statement.Model == nil && base.Statement.Table == "" {
		base = base.Model(new(T))
	}
	if q.Count || q.ReplyWithCount {
		if err := q.Filter(base).Count(&total).Error; err != nil {
			return nil, 0, fmt.Errorf("count %s: %w", q.describe(), err)
		}
	}
	if q.Count {
		return nil, total, nil
	}
	rows = []T{}
	if err := q.Apply(base).Find(&rows).Error; err != nil {
		return nil, 0, fmt.Errorf("query %s: %w", q.describe(), err)
	}
	return rows, total, nil
}

// describe is a short text of the conditions for error messages.
func (q *Query) describe() string {
	parts := make([]string, len(q.Conditions))
	for i, c := range q.Conditions {
		parts[i] = c.Field.Name + " " + string(c.Op)
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ", ")
}

func column(f Field) clause.Column {
	if table, name, ok := strings.Cut(f.Column, "."); ok {
		return clause.Column{Table: table, Name: name}
	}
	return clause.Column{Name: f.Column}
}

func (c Condition) expression() clause.Expression {
	col := column(c.Field)
	switch c.Op {
	case Eq:
		return clause.Eq{Column: col, Value: c.Values[0]}
	case Neq:
		return clause.Neq{Column: col, Value: c.Values[0]}
	case Gt:
		return clause.Gt{Column: col, Value: c.Values[0]}
	case Lt:
		return clause.Lt{Column: col, Value: c.Values[0]}
	case Gte:
		return clause.Gte{Column: col, Value: c.Values[0]}
	case Lte:
		return clause.Lte{Column: col, Value: c.Values[0]}
	case Like:
		return clause.Expr{SQL: "? LIKE ? ESCAPE '" + likeEscape + "'", Vars: []any{col, likePattern(c.Values[0].(string))}}
	case NotLike:
		return clause.Expr{SQL: "? NOT LIKE ? ESCAPE '" + likeEscape + "'", Vars: []any{col, likePattern(c.Values[0].(string))}}
	case In:
		return clause.IN{Column: col, Values: c.Values}
	case NotIn:
		return clause.Not(clause.IN{Column: col, Values: c.Values})
	case IsNull:
		return clause.Eq{Column: col, Value: nil}
	case NotNull:
		return clause.Neq{Column: col, Value: nil}
	}
	// Parse produces only the operators above.
	panic(fmt.Sprintf("query: condition with unknown operator %q", c.Op))
}

// likePattern keeps '%' as the one wildcard and makes '_' (SQL's other
// wildcard) and the escape character match themselves.
func likePattern(v string) string {
	r := strings.NewReplacer(likeEscape, likeEscape+likeEscape, "_", likeEscape+"_")
	return r.Replace(v)
}
