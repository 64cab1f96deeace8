package volume_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/services/image"
	"mplane/services/storage"
	"mplane/services/volume"
)

// TestVolumeFromImage: a data volume from a DataVolumeTemplate image: the
// image is copied once from backup storage into the host's cache, each
// volume made from it holds its content, and the capacity of both is
// accounted for.
func TestVolumeFromImage(t *testing.T) {
	for _, raw := range []bool{true, false} {
		name := "qcow2 agent"
		if raw {
			name = "raw agent"
		}
		t.Run(name, func(t *testing.T) {
			c := newCloud(t, hostOpt{raw: raw})
			content := bytes.Repeat([]byte("data volume template "), 1<<15) // 672 KiB
			src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(content) }))
			t.Cleanup(src.Close)
			img, err := client.CreateAndWait[image.ImageVO](c.ctx, c.st.Client, "images", map[string]any{"name": "tmpl", "url": src.URL + "/t.raw",
				"format": "raw", "mediaType": "DataVolumeTemplate", "backupStorageUuids": []string{c.st.DefaultBackupStorage(t)}})
			if err != nil {
				t.Fatal(err)
			}
			var vols []volume.VolumeVO
			for range 2 {
				v, err := c.create("volumes/data/from/data-volume-templates/"+img.UUID, map[string]any{"name": "from-image"})
				if err != nil {
					t.Fatal(err)
				}
				if v.Status != volume.StatusReady || v.Size != int64(len(content)) || v.HostUUID != c.hosts[0].UUID {
					t.Fatalf("volume from image %+v", v)
				}
				vols = append(vols, v)
			}
			var caches []storage.ImageCacheVO
			if err := c.st.DB().Find(&caches, "image_uuid = ?", img.UUID).Error; err != nil || len(caches) != 1 {
				t.Fatalf("caches %+v, %v; want one", caches, err)
			}
			cached, err := os.ReadFile(filepath.Join(c.dirs[c.hosts[0].UUID], caches[0].InstallPath))
			if err != nil || !bytes.Equal(cached, content) {
				t.Fatalf("the cached image differs from the source (%v)", err)
			}
			if raw {
				for _, v := range vols {
					got, err := os.ReadFile(c.file(v))
					if err != nil || !bytes.Equal(got, content) {
						t.Errorf("volume %s does not hold the image's content (%v)", v.UUID, err)
					}
				}
			} else {
				for _, v := range vols {
					if v.Format != "qcow2" {
						t.Errorf("volume %s is %s, want a qcow2 linked clone", v.UUID, v.Format)
					}
				}
			}
			if got, want := c.reserved(t), 2*int64(len(content))+caches[0].ActualSize; got != want {
				t.Errorf("reserved %d, want two volumes and the cache: %d", got, want)
			}
			c.checkCapacity(t)

			// Only a DataVolumeTemplate makes a data volume.
			root, err := client.CreateAndWait[image.ImageVO](c.ctx, c.st.Client, "images", map[string]any{"name": "root", "url": src.URL + "/r.raw",
				"format": "raw", "backupStorageUuids": []string{c.st.DefaultBackupStorage(t)}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.st.Client.Create(c.ctx, "volumes/data/from/data-volume-templates/"+root.UUID, map[string]any{"name": "x"}); client.StatusCode(err) != 400 || !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("volume from a root volume template: %v, want 400", err)
			}
		})
	}
}
