package image_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/image"
)

func TestImageAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	img, err := client.CreateAndWait[image.ImageVO](ctx, c, "images", map[string]any{"name": "debian", "url": "http://images.example/debian.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Format != "qcow2" || img.MediaType != "RootVolumeTemplate" || img.Platform != "Linux" || img.Status != "Ready" {
		t.Fatalf("created %+v, want the defaults qcow2, RootVolumeTemplate, Linux", img)
	}
	iso, err := client.CreateAndWait[image.ImageVO](ctx, c, "images", map[string]any{"name": "win", "url": "https://images.example/win.iso",
		"format": "iso", "mediaType": "ISO", "platform": "Windows", "size": 4 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if iso.Format != "iso" || iso.MediaType != "ISO" || iso.Platform != "Windows" || iso.Size != 4<<30 {
		t.Fatalf("created %+v", iso)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no url", map[string]any{"name": "x"}, "url is required"},
		{"relative url", map[string]any{"name": "x", "url": "images/x.qcow2"}, "must be an absolute URL"},
		{"bad format", map[string]any{"name": "x", "url": "http://h/x", "format": "vmdk"}, `format must be qcow2, raw or iso, got "vmdk"`},
		{"bad media type", map[string]any{"name": "x", "url": "http://h/x", "mediaType": "Disk"}, "mediaType must be"},
		{"bad platform", map[string]any{"name": "x", "url": "http://h/x", "platform": "BeOS"}, "platform must be"},
		{"negative size", map[string]any{"name": "x", "url": "http://h/x", "size": -1}, "size must not be negative"},
		{"no name", map[string]any{"url": "http://h/x"}, "name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "images", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 SYS.1007 with %q", err, tc.detail)
			}
		})
	}
	rows, _, err := client.QueryAs[image.ImageVO](ctx, c, "images", client.Query{Q: []string{"mediaType=ISO"}})
	if err != nil || len(rows) != 1 || rows[0].UUID != iso.UUID {
		t.Fatalf("query mediaType=ISO: %d rows, %v", len(rows), err)
	}
	j, err := c.Delete(ctx, "images", img.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "images", img.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get a deleted image: %v, want 404", err)
	}
}
