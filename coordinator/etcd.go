package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/herd-llm/herd/cluster"
)

// EtcdConfig says which etcd holds worker membership: an embedded single-member etcd in the
// coordinator's data directory (no Endpoints), or an existing cluster.
type EtcdConfig struct {
	// Endpoints of an existing cluster ("http://host:2379"); empty runs an embedded etcd.
	Endpoints []string
	// Username and Password, when the cluster has authentication on.
	Username, Password string
	// CA, Cert and Key are PEM files for TLS to the cluster (Cert and Key for client auth).
	CA, Cert, Key string
	// Listen is the embedded etcd's client address (host:port; port 0 picks one). Workers
	// register there, so it must be reachable from them.
	Listen string
	// Advertise is the embedded etcd's client URL as workers should dial it; "" derives it
	// from Listen (a wildcard host becomes this machine's outbound address).
	Advertise string
	// DialTimeout bounds the wait for an existing cluster to answer, retries included.
	DialTimeout time.Duration
}

// etcdHandle is the etcd a coordinator uses.
type etcdHandle struct {
	cli       *clientv3.Client
	endpoints []string    // as workers dial them
	embedded  *embed.Etcd // nil for an existing cluster
	log       *zap.Logger
}

func (h *etcdHandle) close() {
	if h.cli != nil {
		h.cli.Close()
	}
	if h.embedded != nil {
		h.embedded.Close()
	}
}

// openEtcd starts the embedded etcd in dir or connects to the configured cluster, and checks
// that it answers.
func openEtcd(ctx context.Context, cfg EtcdConfig, dir string, log *zap.Logger) (*etcdHandle, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	h := &etcdHandle{log: log}
	if len(cfg.Endpoints) == 0 {
		if err := h.startEmbedded(cfg, dir); err != nil {
			return nil, err
		}
	} else {
		h.endpoints = cfg.Endpoints
	}
	var tlsCfg *tls.Config
	if cfg.CA != "" || cfg.Cert != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CA, CertFile: cfg.Cert, KeyFile: cfg.Key}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			h.close()
			return nil, fmt.Errorf("coordinator: etcd TLS: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: h.endpoints, DialTimeout: cfg.DialTimeout, TLS: tlsCfg,
		Username: cfg.Username, Password: cfg.Password, Logger: log.Named("etcd-client")})
	if err != nil {
		h.close()
		return nil, fmt.Errorf("coordinator: etcd at %v: %w", h.endpoints, err)
	}
	h.cli = cli
	// The client connects lazily: ask the cluster something, within the dial timeout.
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, "/herd/"); err != nil {
		h.close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("coordinator: etcd at %v did not answer within %v: is it running and reachable? (%w)", h.endpoints, cfg.DialTimeout, err)
		}
		return nil, fmt.Errorf("coordinator: etcd at %v: %w", h.endpoints, err)
	}
	return h, nil
}

func (h *etcdHandle) startEmbedded(cfg EtcdConfig, dir string) error {
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lu, err := url.Parse("http://" + listen)
	if err != nil {
		return fmt.Errorf("coordinator: --etcd-listen %q: %w", listen, err)
	}
	peer, _ := url.Parse("http://127.0.0.1:0")
	ec := embed.NewConfig()
	ec.Name, ec.Dir = "herd", filepath.Join(dir, "etcd")
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*lu}, []url.URL{*lu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.TickMs, ec.ElectionMs = 50, 500
	// The embedded server logs errors on a clean close; its failures reach the coordinator
	// through the client, in the coordinator's words.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("coordinator: starting the embedded etcd in %s: %w", ec.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("coordinator: embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("coordinator: the embedded etcd was not ready within 30s")
	}
	h.embedded = e
	addr := e.Clients[0].Addr().(*net.TCPAddr)
	adv := cfg.Advertise
	if adv == "" {
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = cluster.OutboundIP()
		}
		adv = "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
	}
	h.endpoints = []string{adv}
	return nil
}
