package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/conf"
	"mplane/server/servertest"
	"mplane/services/vm"
)

// selfSigned writes a certificate for 127.0.0.1 and localhost, valid for
// an hour, and its key; it answers their files.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mplane test node"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestAPIOverTLS: with tls_cert_file and tls_key_file the API is HTTPS
// only; a client that trusts the certificate logs in and creates a VM,
// whose agents post their results to the node over HTTPS; a client that
// does not trust it, and plain HTTP, get nothing. With agent_scheme https
// the node also reaches its agents (hosts and backup storage) over HTTPS
// only, and the host agent downloads the image from the backup storage's
// over HTTPS.
func TestAPIOverTLS(t *testing.T) {
	for name, agents := range map[string]string{"agents over http": "http", "agents over https": "https"} {
		t.Run(name, func(t *testing.T) { testAPIOverTLS(t, agents) })
	}
}

func testAPIOverTLS(t *testing.T, agentScheme string) {
	cert, key := selfSigned(t)
	st := servertest.Start(t, servertest.Options{CAFile: cert, Configure: func(c *conf.Config) {
		c.TLSCertFile, c.TLSKeyFile = cert, key
		c.AgentScheme, c.AgentCAFile = agentScheme, cert
	}})
	if !strings.HasPrefix(st.URL, "https://") {
		t.Fatalf("the node's URL is %s, want https", st.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := client.CreateAndWait[vm.VmInstanceVO](ctx, st.Client, "vm-instances", map[string]any{"name": "over-tls",
		"instanceOfferingUuid": st.Defaults["offering"], "imageUuid": st.Defaults["image"], "l3NetworkUuids": []string{st.Defaults["l3"]}})
	if err != nil || v.State != vm.StateRunning {
		t.Fatalf("a VM over TLS: %+v, %v", v, err)
	}
	untrusting, err := client.New(st.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer untrusting.Close()
	if _, err := untrusting.Login(ctx, "admin", servertest.Password); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client that does not trust the certificate: %v, want a certificate error", err)
	}
	if agentScheme == "https" {
		// The hosts' agents answer HTTPS only.
		for _, addr := range st.Agents {
			if resp, err := http.Post("http://"+addr+"/host/echo", "application/json", nil); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Errorf("agent %s answered plain HTTP", addr)
				}
			}
		}
	}
	plain := "http://" + strings.TrimPrefix(st.URL, "https://") + "/v1/zones"
	resp, err := http.Get(plain)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP to the TLS listener answered 200")
		}
	}
}
