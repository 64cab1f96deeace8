package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Decode decodes one inventory into a T. A nil inventory (a result that
// had none) gives T's zero value.
func Decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode inventory into %T: %w", v, err)
	}
	return v, nil
}

// QueryAs is Client.Query with the inventories decoded into T.
func QueryAs[T any](ctx context.Context, c *Client, resourcePath string, q Query) ([]T, int, error) {
	raws, total, err := c.Query(ctx, resourcePath, q)
	if err != nil {
		return nil, 0, err
	}
	out := make([]T, 0, len(raws))
	for i, raw := range raws {
		v, err := Decode[T](raw)
		if err != nil {
			return nil, 0, fmt.Errorf("query %s: inventory %d: %w", resourcePath, i, err)
		}
		out = append(out, v)
	}
	return out, total, nil
}

// GetAs is Client.Get with the inventory decoded into T.
func GetAs[T any](ctx context.Context, c *Client, resourcePath, uuid string) (T, error) {
	raw, err := c.Get(ctx, resourcePath, uuid)
	if err != nil {
		var zero T
		return zero, err
	}
	return Decode[T](raw)
}

// WaitAs is Job.Wait with the inventory decoded into T.
func WaitAs[T any](ctx context.Context, j *Job, progress func(elapsed time.Duration, state string)) (T, error) {
	raw, err := j.Wait(ctx, progress)
	if err != nil {
		var zero T
		return zero, err
	}
	return Decode[T](raw)
}

// CreateAndWait creates a resource, waits for its job and decodes the new
// resource's inventory into T.
func CreateAndWait[T any](ctx context.Context, c *Client, resourcePath string, params any, opts ...CallOption) (T, error) {
	j, err := c.Create(ctx, resourcePath, params, opts...)
	if err != nil {
		var zero T
		return zero, err
	}
	return WaitAs[T](ctx, j, nil)
}

// ActionAndWait runs an action, waits for its job and decodes the
// resource's inventory into T.
func ActionAndWait[T any](ctx context.Context, c *Client, resourcePath, uuid, action string, body any, opts ...CallOption) (T, error) {
	j, err := c.Action(ctx, resourcePath, uuid, action, body, opts...)
	if err != nil {
		var zero T
		return zero, err
	}
	return WaitAs[T](ctx, j, nil)
}
