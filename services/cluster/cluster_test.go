package cluster_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/cluster"
)

func TestClusterAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: 1})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cl, err := client.CreateAndWait[cluster.ClusterVO](ctx, c, "clusters", map[string]any{"name": "c1", "zoneUuid": st.Defaults["zone"]})
	if err != nil {
		t.Fatal(err)
	}
	if cl.HypervisorType != "KVM" || cl.ZoneUUID != st.Defaults["zone"] || cl.State != "Enabled" {
		t.Fatalf("created %+v, want a KVM cluster (the default) in the default zone", cl)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no name", map[string]any{"zoneUuid": st.Defaults["zone"]}, "name is required"},
		{"no zone", map[string]any{"name": "x"}, "zoneUuid is required"},
		{"unknown zone", map[string]any{"name": "x", "zoneUuid": "0000000000000000000000000000beef"}, "zoneUuid 0000000000000000000000000000beef does not exist"},
		{"malformed zone", map[string]any{"name": "x", "zoneUuid": "nozone"}, `params.zoneUuid must be a UUID (32 lowercase hexadecimal digits), got "nozone"`},
		{"other hypervisor", map[string]any{"name": "x", "zoneUuid": st.Defaults["zone"], "hypervisorType": "ESX"}, `hypervisorType must be KVM, got "ESX"`},
		{"two problems", map[string]any{"hypervisorType": "Xen"}, "name is required; zoneUuid is required; hypervisorType must be KVM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "clusters", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 SYS.1007 with %q", err, tc.detail)
			}
		})
	}
	rows, _, err := client.QueryAs[cluster.ClusterVO](ctx, c, "clusters", client.Query{Q: []string{"hypervisorType=KVM", "name=c1"}})
	if err != nil || len(rows) != 1 || rows[0].UUID != cl.UUID {
		t.Fatalf("query: %d rows, %v", len(rows), err)
	}

	// The default cluster has the stack's host: it cannot go.
	j, err := c.Delete(ctx, "clusters", st.Defaults["cluster"], client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), "1 hosts") {
		t.Fatalf("delete a cluster with a host: %v, want InvalidState naming the hosts", err)
	}
	j, err = c.Delete(ctx, "clusters", cl.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "clusters", cl.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get a deleted cluster: %v, want 404", err)
	}
}
