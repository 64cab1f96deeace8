// Package tlsconf builds the TLS settings of mplane's listeners and
// clients from files: a server's certificate and key, and the extra CA
// certificates a client trusts beside the system's.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// Server is the configuration of a TLS listener with the certificate and
// key in the PEM files certFile and keyFile: TLS 1.2 or later.
func Server(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Roots is the system's certificate pool with the PEM certificates of
// caFile added (a private CA, or a self-signed server certificate).
func Roots(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA certificates %s: %w", caFile, err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificate in " + caFile)
	}
	return pool, nil
}

// Client is an HTTP client that trusts the certificates of caFile beside
// the system's; an empty caFile is nil (the caller's default client).
func Client(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := Roots(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr}, nil
}
