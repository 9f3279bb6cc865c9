package controlplane

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/clientcmd/api/latest"
)

// Admin is the user the static token authenticates; system:masters makes it
// cluster-admin under RBAC.
const (
	AdminUser  = "sluice-admin"
	AdminGroup = "system:masters"
)

// writeCredentials writes the service-account signing key and the static
// token file, and returns the admin token.
func writeCredentials(l layout) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("generate service-account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("marshal service-account key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(l.saKeyFile(), keyPEM, 0o600); err != nil {
		return "", fmt.Errorf("write service-account key: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	token := hex.EncodeToString(raw)
	if err := os.WriteFile(l.tokenFile(), []byte(tokenLine(token)), 0o600); err != nil {
		return "", fmt.Errorf("write token file: %w", err)
	}
	return token, nil
}

// tokenLine is one --token-auth-file row: token,user,uid,"groups".
func tokenLine(token string) string {
	return fmt.Sprintf("%s,%s,%s,%q\n", token, AdminUser, AdminUser, AdminGroup)
}

// restConfig is the admin client config, trusting the apiserver's own
// self-signed serving certificate bundle.
func restConfig(l layout, token string, caPEM []byte) *rest.Config {
	return &rest.Config{
		Host:            l.apiURL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             100,
		Burst:           200,
	}
}

// writeKubeconfig writes cfg as a kubeconfig file for kubectl. It encodes
// with clientcmd/api/latest rather than clientcmd.WriteToFile, which would
// pull spf13/pflag into the main go.mod.
func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["sluice-test"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos[AdminUser] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["sluice-test"] = &clientcmdapi.Context{Cluster: "sluice-test", AuthInfo: AdminUser}
	kc.CurrentContext = "sluice-test"
	b, err := runtime.Encode(latest.Codec, kc)
	if err != nil {
		return fmt.Errorf("encode kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
