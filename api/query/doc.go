// Package query implements the query language of ZStack's REST API for
// GET /v1/<resources>, against a per-resource whitelist (Schema), and
// applies it to a *gorm.DB.
//
// Parameters:
//
//	q=field<op>value   repeatable, ANDed. Operators: = != > < >= <=,
//	                   ~= (LIKE) and !~= (NOT LIKE) with % as the wildcard,
//	                   ?= (IN) and !?= (NOT IN) with a comma-separated list,
//	                   and "field is null", "field not null".
//	limit=N            0..MaxLimit (10000); default DefaultLimit (1000)
//	start=N            rows to skip, >= 0; default 0
//	count=true         answer only {"total": N}
//	replyWithCount=true  answer {"inventories": [...], "total": N}
//	sort=+f|-f         ascending/descending; several keys comma-separated;
//	                   a bare "f", or " f" (an unencoded "+" decodes to a
//	                   space), is ascending
//	fields=a,b         keep only these members of each inventory
//
// Other parameters are ignored, so a handler may take its own. limit, start,
// count, replyWithCount, sort and fields may each be given once.
//
// Parsing q: the field name is the longest run of letters, digits, '_' and
// '.' at the start; the operator is the longest one that follows the name
// ("!?=" before "!=" before "="); everything after the operator is the
// value, whatever it contains, so values may hold '=', '<', ',' (except in
// lists, where ',' separates) and so on: "description=a=b" is description
// = "a=b", and "name==x" is name = "=x". "is null" and "not null" follow the
// name after a space (a "+" in a URL) and match without regard to case.
//
// Values are parsed by the field's Type: String as is; Int a base-10
// int64; Bool true or false; Time RFC 3339 (2024-05-01T10:00:00Z, fraction
// optional), "2024-05-01 10:00:00" and "2024-05-01" as UTC, or an integer of
// Unix milliseconds. A "+hh:mm" zone whose "+" the URL decoding turned into
// a space is accepted. Operators per type: String all; Int and Time all but
// ~= and !~=; Bool =, !=, is null, not null.
//
// Guarantees:
//
//   - Only schema fields can be filtered, sorted or projected; everything
//     else is refused. Values reach SQL only as bound parameters; column
//     names come from the schema (checked to be plain identifiers by
//     NewSchema) and are quoted by GORM.
//   - Every error of Parse is an *errcode.Error with code InvalidArgument
//     (HTTP 400) naming the offending parameter and listing what is allowed
//     (queryable fields, operators, the value form).
//   - LIKE: '%' is the only wildcard; '_' and '!' match themselves (they are
//     escaped, with ESCAPE '!', on both backends).
//   - Bounds: at most MaxConditions q parameters and MaxListValues values in
//     one list, so a query cannot exceed the backends' bound-parameter limits.
//   - Stable pages: the schema's Key field (uuid) is always the last ORDER BY
//     key, so limit/start paging neither repeats nor skips rows of an
//     unchanged table.
//
// SQL semantics are the database's and match ZStack's: != , !?= and !~=
// never match NULL (use "is null"). Text comparison follows the column's
// collation: MariaDB's default utf8mb4 collation ignores case in =, LIKE
// and sort; SQLite's = and sort are case-sensitive and its LIKE ignores
// ASCII case.
//
// A handler does:
//
//	q, err := query.Parse(vmSchema, r.URL.Query())
//	if err != nil { rest.WriteError(w, err); return }
//	rows, total, err := query.Find[VmInstanceVO](ctx, db, q)
//	...
//	reply, err := q.Reply(toInventories(rows), total)
//	rest.WriteJSON(w, http.StatusOK, reply)
package query
