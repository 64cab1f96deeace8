package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestStoragePathsSyncOrAsync(t *testing.T) {
	for _, p := range []string{PathStorageEcho, PathStorageConnect} {
		if !IsSync(p) {
			t.Errorf("%s is not sync", p)
		}
	}
	async := []string{
		PathStoragePing, PathStorageCapacity, PathVolumeCreateEmpty, PathVolumeCreateFromImage,
		PathVolumeClone, PathVolumeResize, PathVolumeDelete, PathVolumeInfo, PathVolumeRevert,
		PathSnapshotCreate, PathSnapshotDelete, PathImageDownload, PathImageFetch, PathImageDelete,
	}
	seen := map[string]bool{}
	for _, p := range async {
		if IsSync(p) {
			t.Errorf("%s is sync", p)
		}
		if seen[p] || !strings.HasPrefix(p, "/") {
			t.Errorf("path %q duplicated or not absolute", p)
		}
		seen[p] = true
	}
	// The KVM agent's sync paths are still sync.
	if !IsSync(PathConnect) || !IsSync(PathEcho) || IsSync(PathStartVM) {
		t.Error("the KVM paths changed")
	}
	if CreateVolumeFromImage.Path != PathVolumeCreateFromImage || FetchImage.Path != PathImageFetch || StorageConnect.Path != PathStorageConnect {
		t.Error("a command's path")
	}
}

// TestStorageWireNames pins the JSON names (ZStack's where they exist) and
// that answers marshal without nulls.
func TestStorageWireNames(t *testing.T) {
	rsp := VolumeRsp{
		Response:        Response{Success: true},
		StorageCapacity: StorageCapacity{TotalCapacity: 10, AvailableCapacity: 4},
		InstallPath:     "vols/v1", Format: FormatQcow2, Size: 3, ActualSize: 1, BackingFile: "images/i",
	}
	data, err := Marshal(rsp)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"success", "error", "totalCapacity", "availableCapacity", "installPath", "format", "size", "actualSize", "backingFile"} {
		if _, ok := m[k]; !ok {
			t.Errorf("VolumeRsp has no %q: %s", k, data)
		}
	}
	data, err = Marshal(DownloadImageCmd{ImageUUID: "i", URL: "http://x/i", InstallPath: "images/i", Md5Sum: "00", ExpectedSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"imageUuid":"i","url":"http://x/i","installPath":"images/i","md5sum":"00","expectedSize":1}`; string(data) != want {
		t.Errorf("DownloadImageCmd = %s, want %s", data, want)
	}
	// A connect answer's formats are an array, never null.
	data, err = Marshal(StorageConnectRsp{Formats: []string{FormatRaw}})
	if err != nil || !strings.Contains(string(data), `"formats":["raw"]`) {
		t.Errorf("StorageConnectRsp = %s, %v", data, err)
	}
}
