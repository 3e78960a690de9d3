package rpc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Mutual TLS of the data plane. Every node (coordinator and workers) has a
// certificate signed by the cluster's CA and usable both as a server and a
// client certificate; each side requires the other's and checks it against
// the CA, so a process without a certificate from that CA can neither send
// tasks to a worker nor answer the coordinator's calls. TLS 1.3 only.

// File names in a certificate folder (fedsim certs --out DIR).
const (
	CAFile      = "ca.pem"
	CAKeyFile   = "ca-key.pem"
	NodeFile    = "node.pem"
	NodeKeyFile = "node-key.pem"
)

// PEM is a certificate and its private key, PEM-encoded.
type PEM struct {
	Cert, Key []byte
}

// NewDevCA makes a development certificate authority (ECDSA P-256, valid
// for validity).
func NewDevCA(name string, validity time.Duration) (PEM, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"fedsim development CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: CA certificate: %w", err)
	}
	return encodePEM(der, key)
}

// IssueNode signs a node certificate for hosts (IP addresses or DNS names)
// with ca, valid for both server and client authentication.
func IssueNode(ca PEM, name string, hosts []string, validity time.Duration) (PEM, error) {
	caPair, err := tls.X509KeyPair(ca.Cert, ca.Key)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: CA certificate and key: %w", err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: node key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"fedsim node"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(tmpl.IPAddresses)+len(tmpl.DNSNames) == 0 {
		return PEM{}, errors.New("rpc: a node certificate needs at least one host (IP address or DNS name)")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: node certificate: %w", err)
	}
	return encodePEM(der, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encodePEM(der []byte, key *ecdsa.PrivateKey) (PEM, error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return PEM{}, fmt.Errorf("rpc: encoding key: %w", err)
	}
	return PEM{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}, nil
}

// TLSConfigs builds the two sides of mutual TLS from the CA's certificate
// and a node's certificate and key: server for a worker's gRPC server
// (client certificates required), client for the coordinator's calls.
func TLSConfigs(caCert []byte, node PEM) (server, client *tls.Config, err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caCert) {
		return nil, nil, errors.New("rpc: the CA file holds no PEM certificate")
	}
	pair, err := tls.X509KeyPair(node.Cert, node.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: node certificate and key do not form a pair: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// LoadTLSDir reads ca.pem, node.pem and node-key.pem from dir (as written
// by `fedsim certs`) and returns the two sides of mutual TLS.
func LoadTLSDir(dir string) (server, client *tls.Config, err error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("rpc: certificates: %w (create them with `fedsim certs --out %s`)", err, dir)
		}
		return b, nil
	}
	ca, err := read(CAFile)
	if err != nil {
		return nil, nil, err
	}
	cert, err := read(NodeFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := read(NodeKeyFile)
	if err != nil {
		return nil, nil, err
	}
	return TLSConfigs(ca, PEM{Cert: cert, Key: key})
}
