package transport_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/internal/raftlog"
	"github.com/heraldhq/herald/cluster/internal/testkit"
	"github.com/heraldhq/herald/cluster/transport"
)

// logFSM records the commands it applies. It is mutex-guarded.
type logFSM struct {
	mu sync.Mutex
	// guards following
	applied []string
}

func (f *logFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return len(f.applied)
}

func (f *logFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &logSnapshot{n: len(f.applied)}, nil
}

func (f *logFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

func (f *logFSM) has(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.applied, cmd)
}

type logSnapshot struct{ n int }

func (s *logSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := fmt.Fprintf(sink, "%d", s.n); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *logSnapshot) Release() {}

// replica is one member of a test Raft group.
type replica struct {
	raft  *raft.Raft
	fsm   *logFSM
	trans *transport.Transport
}

// startGroup starts a Raft group named group with one replica on each mux,
// bootstrapped with all of them as voters, and shuts it down when the test
// ends.
func startGroup(t *testing.T, group string, muxes []*transport.Mux, log *slog.Logger) []*replica {
	t.Helper()
	var servers []raft.Server
	for i, m := range muxes {
		servers = append(servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(fmt.Sprintf("n%d", i)),
			Address:  raftAddr(m),
		})
	}
	var replicas []*replica
	t.Cleanup(func() {
		for _, r := range replicas {
			if err := r.raft.Shutdown().Error(); err != nil {
				t.Errorf("group %s: shutdown: %v", group, err)
			}
		}
		for _, r := range replicas {
			r.trans.CloseStreams()
			_ = r.trans.Close() // always nil
		}
	})
	for i, m := range muxes {
		hl := raftlog.New(log).With("node", servers[i].ID, "group", group)
		trans, err := m.NewTransport(group, hl.Named("net"))
		if err != nil {
			t.Fatalf("NewTransport(%q): %v", group, err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.HeartbeatTimeout = 200 * time.Millisecond
		conf.ElectionTimeout = 200 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 10 * time.Millisecond
		conf.Logger = hl.Named("raft")
		fsm := &logFSM{}
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			_ = trans.Close()
			t.Fatalf("NewRaft %s/%s: %v", group, conf.LocalID, err)
		}
		replicas = append(replicas, &replica{raft: r, fsm: fsm, trans: trans})
	}
	if err := replicas[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatalf("bootstrap %s: %v", group, err)
	}
	return replicas
}

// waitLeader returns the replica that leads, once exactly one does.
func waitLeader(t *testing.T, replicas []*replica) *replica {
	t.Helper()
	var leader *replica
	testkit.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		leader = nil
		for _, r := range replicas {
			if r.raft.State() == raft.Leader {
				if leader != nil {
					return errors.New("got two leaders, want one")
				}
				leader = r
			}
		}
		if leader == nil {
			return errors.New("got no leader, want one")
		}
		return nil
	})
	return leader
}

func TestRaftGroupsShareMuxes(t *testing.T) {
	log := testLogger(t, slog.LevelInfo)
	var muxes []*transport.Mux
	for range 3 {
		muxes = append(muxes, newMux(t, transport.Config{Logger: log}))
	}
	groups := map[string][]*replica{}
	for _, g := range []string{"meta", "p0"} {
		groups[g] = startGroup(t, g, muxes, log)
	}
	for g, replicas := range groups {
		start := time.Now()
		leader := waitLeader(t, replicas)
		t.Logf("group %s: leader elected after %v", g, time.Since(start))

		cmd := "hello " + g
		f := leader.raft.Apply([]byte(cmd), 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatalf("group %s: Apply: %v", g, err)
		}
		if got, want := f.Response(), 1; got != want {
			t.Errorf("group %s: Apply response: got %v, want %v", g, got, want)
		}
		testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			for i, r := range replicas {
				if !r.fsm.has(cmd) {
					return fmt.Errorf("group %s: replica n%d has not applied %q", g, i, cmd)
				}
			}
			return nil
		})
		for i, r := range replicas {
			if r.fsm.has("hello " + otherGroup(g)) {
				t.Errorf("group %s: replica n%d applied the other group's command", g, i)
			}
		}
	}
}

func otherGroup(g string) string {
	if g == "meta" {
		return "p0"
	}
	return "meta"
}
