// Package api is mplane's REST portal. It follows ZStack's REST conventions
// (see docs/ and the "api" section of the architecture), so that scripts and
// SDKs written for ZStack's REST API work against mplane.
//
// The generic foundations live in subpackages, each with its own guarantees:
//
//	api/rest    JSON answers and errors, strict request-body decoding
//	            ({"params": {...}} and {"<action>": {...}}), mounting a handler
//	            under /v1 and /zstack/v1
//	api/query   the query language of GET /v1/<resources> (q=, limit, start,
//	            count, replyWithCount, sort, fields), applied to a *gorm.DB
//	api/jobs    asynchronous API jobs: the api_jobs table, idempotent creation
//	            by X-Job-UUID, GET /v1/api-jobs/{uuid}, webhook delivery
//	api/auth    accounts, sessions, PUT /v1/accounts/login and the
//	            "Authorization: OAuth <session>" middleware
//	api/client  the Go client of this API (see its own doc)
//
// The dependency order is rest <- query, rest <- auth <- jobs: none of them
// imports package api, so the per-resource routes and the bus portal can live
// here and use them all.
package api
