package ha

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// member is one embedded etcd member of a test cluster.
type member struct {
	name      string
	dir       string
	clientURL string
	peerURL   string
	etcd      *embed.Etcd
	stopped   bool
	closed    chan struct{} // closed once etcd.Close has returned
}

// cluster is a 3-member etcd cluster on loopback, every member in this test process.
type cluster struct {
	dir     string
	p       *pki
	members []*member
	retired []*member // killed and replaced; stop still waits for their close
}

// freePorts reserves n loopback ports and releases them; a port may be taken again before
// etcd binds it, which startCluster retries.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startCluster starts a 3-member cluster in dir and waits until it has a leader. Ticks are
// short (50 ms, election 500 ms) so an election takes about a second, yet a busy 2-core
// machine does not make members time out on each other.
func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	return startClusterTLS(t, dir, nil)
}

// startClusterTLS is startCluster with mutual TLS for clients and peers when p is not nil.
func startClusterTLS(t *testing.T, dir string, p *pki) *cluster {
	t.Helper()
	var lastErr error
	for attempt := range 3 {
		c, err := tryStartCluster(filepath.Join(dir, fmt.Sprintf("try%d", attempt)), p)
		if err == nil {
			t.Cleanup(c.stop)
			return c
		}
		lastErr = err
	}
	t.Fatalf("start etcd cluster: %v", lastErr)
	return nil
}

func tryStartCluster(dir string, p *pki) (*cluster, error) {
	scheme := "http"
	if p != nil {
		scheme = "https"
	}
	const n = 3
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, fmt.Errorf("free ports: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, p: p}
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		c.members = append(c.members, &member{name: name, dir: filepath.Join(dir, name),
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			peerURL:   fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i+1])})
	}
	if err := c.startAll(embed.ClusterStateFlagNew); err != nil {
		return nil, err
	}
	return c, nil
}

// initialCluster is the name=peerURL list of the members.
func (c *cluster) initialCluster() string {
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	return strings.Join(initial, ",")
}

// startAll starts every member from its dir (new, or as restored there) and waits for a leader.
func (c *cluster) startAll(state string) error {
	initial := c.initialCluster()
	for _, m := range c.members {
		if err := c.startMember(m, initial, state); err != nil {
			c.stop()
			return err
		}
	}
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case err := <-m.etcd.Err():
			c.stop()
			return fmt.Errorf("member %s: %w", m.name, err)
		case <-time.After(30 * time.Second):
			c.stop()
			return fmt.Errorf("member %s not ready after 30s", m.name)
		}
	}
	if _, err := c.waitLeader(30 * time.Second); err != nil {
		c.stop()
		return err
	}
	return nil
}

// startMember starts m with fast ticks and the limits of docs/production/etcd-N.conf.yml.
func (c *cluster) startMember(m *member, initialCluster, state string) error {
	clientURL, err := url.Parse(m.clientURL)
	if err != nil {
		return err
	}
	peerURL, err := url.Parse(m.peerURL)
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	if c.p != nil {
		tlsInfo := transport.TLSInfo{CertFile: c.p.nodeCert, KeyFile: c.p.nodeKey, TrustedCAFile: c.p.caFile, ClientCertAuth: true}
		cfg.ClientTLSInfo = tlsInfo
		cfg.PeerTLSInfo = tlsInfo
	}
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = "shoelace-ha-test"
	cfg.ClusterState = state
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.UnsafeNoFsync = true
	cfg.MaxRequestBytes = 10 << 20
	cfg.MaxTxnOps = 40064
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{m.dir + ".log"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	m.etcd, m.stopped, m.closed = e, false, make(chan struct{})
	return nil
}

// endpoints are the client URLs of every member, comma-separated.
func (c *cluster) endpoints() string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return strings.Join(eps, ",")
}

// leader is the running member that is the leader, or nil.
func (c *cluster) leader() *member {
	for _, m := range c.members {
		if !m.stopped && m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
			return m
		}
	}
	return nil
}

// waitLeader waits until a running member leads and every running member agrees on it.
func (c *cluster) waitLeader(timeout time.Duration) (*member, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.leader(); l != nil {
			agree := true
			for _, m := range c.members {
				if !m.stopped && m.etcd.Server.Leader() != l.etcd.Server.MemberID() {
					agree = false
				}
			}
			if agree {
				return l, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("no agreed etcd leader after %s", timeout)
}

// kill stops a member hard: raft stops at once (no leadership transfer, no goodbye to its
// peers), so the others elect a new leader while clients still hold connections to it, as
// with a hung or partitioned member. Its listeners are closed in the background: a graceful
// close of the client connections takes etcd's request timeout, and the test goes on meanwhile.
func (m *member) kill() {
	if m.stopped || m.etcd == nil {
		return
	}
	m.stopped = true
	m.etcd.Server.HardStop()
	go func() {
		defer close(m.closed)
		m.etcd.Close()
	}()
}

func (c *cluster) stop() {
	for _, m := range c.members {
		m.kill()
	}
	for _, m := range append(c.members, c.retired...) {
		if m.closed != nil {
			<-m.closed
		}
	}
}
