package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/cluster/clustertest"
	"github.com/heraldhq/herald/storage"
)

// restoreWriters post to channels of one partition through rotating nodes
// until stopped, each post with its own client_msg_id, retried with that
// id while its outcome is unknown or it was not applied. A post refused
// by the state machine (the channel does not exist) moves on to the next
// id. They record every acknowledged post.
type restoreWriters struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex                   // guards following
	acked map[string]map[string]uint64 // channel → client_msg_id → seq
	count map[string]int               // channel → posts answered (acknowledged or refused)
}

func startRestoreWriters(t *testing.T, c *clustertest.Cluster, channels []string, perChannel int) *restoreWriters {
	ctx, cancel := context.WithCancel(context.Background())
	w := &restoreWriters{cancel: cancel, acked: map[string]map[string]uint64{}, count: map[string]int{}}
	t.Cleanup(func() { w.stop() }) // a failed test stops them before the cluster
	for _, ch := range channels {
		w.acked[ch] = map[string]uint64{}
		for g := range perChannel {
			w.wg.Go(func() { w.run(ctx, t, c, ch, g) })
		}
	}
	return w
}

func (w *restoreWriters) run(ctx context.Context, t *testing.T, c *clustertest.Cluster, ch string, g int) {
	for k := 0; ctx.Err() == nil; k++ {
		id := fmt.Sprintf("w%d-%d", g, k)
		for ctx.Err() == nil {
			nodes := c.Running()
			if len(nodes) == 0 {
				return // the cluster is stopping
			}
			via := nodes[(g+k)%len(nodes)]
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err := via.Apply(pctx, clustertest.Post(ch, "during restore "+id, id))
			cancel()
			if ctx.Err() != nil {
				return
			}
			switch {
			case err == nil:
				w.mu.Lock()
				w.acked[ch][id] = res.Message.GetSeq()
				w.count[ch]++
				w.mu.Unlock()
			case errors.Is(err, storage.ErrNotFound):
				w.mu.Lock()
				w.count[ch]++
				w.mu.Unlock()
			case clustertest.Retryable(err) || errors.Is(err, context.DeadlineExceeded):
				continue // the same id again
			default:
				t.Errorf("post %s to %s via %s: %v", id, ch, via.ID(), err)
				return
			}
			break
		}
	}
}

// answered returns how many posts to ch were answered, and how many of
// them acknowledged.
func (w *restoreWriters) answered(ch string) (answered, acked int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count[ch], len(w.acked[ch])
}

// stop stops the writers and returns the posts acknowledged per channel.
// It is idempotent.
func (w *restoreWriters) stop() map[string]map[string]uint64 {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// TestRestoreSnapshotUnderWrites restores saved partitions into a cluster
// whose partitions take posts all along: to a channel only the snapshot
// holds (refused until the restore, acknowledged after it), and to one
// only the target cluster held (gone after it). Each restore must either
// fail or leave every replica with the same digest and the snapshot's
// content, and every post acknowledged must be there with its seq.
func TestRestoreSnapshotUnderWrites(t *testing.T) {
	t.Parallel()
	const partitions uint32 = 2
	const saved = 5
	src := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	dst := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	keep := channelPerPartition("keep", partitions)
	busy := channelPerPartition("busy", partitions)
	createChannels(t, src.Node(0), keep)
	for _, ch := range keep {
		for k := range saved {
			post(t, src.Node(k%3), ch, fmt.Sprintf("%s-%d", ch, k))
		}
	}
	want := map[string][]*heraldv1.Message{}
	for _, ch := range keep {
		want[ch] = readAll(t, src.Node(1), ch)
	}
	snaps := saveAll(t, src, partitions)
	createChannels(t, dst.Node(0), busy)

	for p := range partitions {
		keepCh, busyCh := keep[p], busy[p]
		w := startRestoreWriters(t, dst, []string{keepCh, busyCh}, 3)
		clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "writers under way", func() bool {
			n, _ := w.answered(busyCh)
			return n >= 10
		})
		via := dst.Node(int(p+1) % 3)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		begin := time.Now()
		index, err := via.RestoreSnapshot(ctx, p, bytes.NewReader(snaps[p]))
		cancel()
		if err != nil {
			w.stop()
			t.Fatalf("RestoreSnapshot(%d) via %s under writes: %v", p, via.ID(), err)
		}
		t.Logf("partition %d restored at index %d under writes in %v", p, index, time.Since(begin).Round(time.Millisecond))
		took := clustertest.CheckFor(t, 30*time.Second, 10*time.Millisecond, "posts acknowledged after the restore", func() bool {
			_, acked := w.answered(keepCh)
			return acked >= 5
		})
		t.Logf("partition %d: posts to %s acknowledged %v after the restore", p, keepCh, took.Round(time.Millisecond))
		acked := w.stop()
		dst.WaitSameDigests(30 * time.Second)

		for _, n := range dst.Running() {
			got := readAll(t, n, keepCh)
			if len(got) < len(want[keepCh]) {
				t.Fatalf("%s via %s: got %d messages, want the snapshot's %d and more", keepCh, n.ID(), len(got), len(want[keepCh]))
			}
			for i, m := range want[keepCh] {
				if g := got[i]; g.GetSeq() != m.GetSeq() || g.GetText() != m.GetText() || g.GetClientMsgId() != m.GetClientMsgId() {
					t.Errorf("%s via %s, message %d: got %d %q, want the snapshot's %d %q", keepCh, n.ID(), i,
						g.GetSeq(), g.GetClientMsgId(), m.GetSeq(), m.GetClientMsgId())
				}
			}
			have := map[string]uint64{}
			for _, m := range got[len(want[keepCh]):] {
				if _, dup := have[m.GetClientMsgId()]; dup {
					t.Errorf("%s via %s: client_msg_id %q twice", keepCh, n.ID(), m.GetClientMsgId())
				}
				have[m.GetClientMsgId()] = m.GetSeq()
			}
			for id, seq := range acked[keepCh] {
				if have[id] != seq {
					t.Errorf("%s via %s: acknowledged post %s (seq %d) is at seq %d, want it kept", keepCh, n.ID(), id, seq, have[id])
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, _, err := n.GetChannel(ctx, clustertest.Alice, busyCh)
			cancel()
			if !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("channel %s via %s after the restore: got %v, want not found (the snapshot replaced it)", busyCh, n.ID(), err)
			}
		}
		t.Logf("partition %d: %d posts to %s acknowledged, all kept on every replica", p, len(acked[keepCh]), keepCh)
	}
}

// TestRestoreSnapshotReplicaDown restores a partition while one of its
// replicas is down: the majority installs the snapshot, but the restore
// cannot confirm it everywhere, so it fails and names the replica. Once
// the replica is back it installs the snapshot too.
func TestRestoreSnapshotReplicaDown(t *testing.T) {
	t.Parallel()
	const partitions uint32 = 2
	const p = 0
	src := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	dst := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: partitions})
	ch := channelIn("down", p, partitions)
	createChannels(t, src.Node(0), []string{ch})
	for k := range 3 {
		post(t, src.Node(k), ch, fmt.Sprintf("%s-%d", ch, k))
	}
	snaps := saveAll(t, src, partitions)
	down := dst.Member(2)
	down.Kill()
	clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, fmt.Sprintf("partition %d led by a running node", p), func() bool {
		for _, n := range dst.Running() {
			if r := n.Replica(p); r != nil && r.IsLeader() && r.Ready() {
				return true
			}
		}
		return false
	})
	// The deadline bounds the wait for the confirmation that cannot come.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	begin := time.Now()
	_, err := dst.Node(0).RestoreSnapshot(ctx, p, bytes.NewReader(snaps[p]))
	cancel()
	t.Logf("RestoreSnapshot with %s down: %v after %v", down.ID, err, time.Since(begin).Round(time.Millisecond))
	if !errors.Is(err, storage.ErrFailedPrecondition) || !strings.Contains(err.Error(), "replica "+down.ID) {
		t.Fatalf("RestoreSnapshot with replica %s down: got %v, want failed precondition naming it", down.ID, err)
	}
	down.Restart()
	dst.WaitReady(30 * time.Second)
	dst.WaitSameDigests(30 * time.Second)
	for _, n := range dst.Running() {
		if got := readAll(t, n, ch); len(got) != 3 {
			t.Errorf("%s via %s once %s is back: got %d messages, want the snapshot's 3", ch, n.ID(), down.ID, len(got))
		}
	}
}

// TestRemoteStreamsAcrossRestore watches a channel through a node that
// holds no replica of its partition, so the streams read from the leader
// over ClusterService.Watch. A restore that takes the channel's head back
// below a stream's cursor ends it with ErrCursorAhead, carried over the
// RPC; a stream opened with a cursor past the leader's head gets it at
// once.
func TestRemoteStreamsAcrossRestore(t *testing.T) {
	t.Parallel()
	const partitions uint32 = 2
	c := clustertest.New(t, clustertest.Options{Nodes: 4, Partitions: partitions})
	c.WaitSettled(30 * time.Second)
	const p = 0
	var outsider *cluster.Node
	for _, n := range c.Running() {
		if n.Replica(p) == nil {
			outsider = n
		}
	}
	if outsider == nil {
		t.Fatalf("every node holds a replica of partition %d", p)
	}
	ch := channelIn("remote", p, partitions)
	createChannels(t, c.Node(0), []string{ch})
	for k := range 5 {
		post(t, c.Node(k%4), ch, fmt.Sprintf("%s-%d", ch, k))
	}
	var snap bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := c.Node(0).SaveSnapshot(ctx, p, &snap)
	cancel()
	if err != nil {
		t.Fatalf("SaveSnapshot(%d): %v", p, err)
	}
	for k := 5; k < 10; k++ {
		post(t, c.Node(k%4), ch, fmt.Sprintf("%s-%d", ch, k))
	}

	next := func(s cluster.Stream, d time.Duration) ([]*heraldv1.Event, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return s.Next(ctx, 100)
	}
	far, err := outsider.Watch(ch, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	begin := time.Now()
	if evs, err := next(far, 30*time.Second); !errors.Is(err, storage.ErrCursorAhead) {
		t.Errorf("remote stream after 100, head 10: got %d events, %v; want ErrCursorAhead", len(evs), err)
	}
	t.Logf("remote stream after 100 (head 10) ended after %v", time.Since(begin).Round(time.Millisecond))

	s, err := outsider.Watch(ch, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if evs, err := next(s, 30*time.Second); err != nil || len(evs) != 1 || evs[0].GetSeq() != 10 {
		t.Fatalf("remote stream after 9: got %d events, %v; want seq 10", len(evs), err)
	}
	type result struct {
		evs []*heraldv1.Event
		err error
	}
	done := make(chan result, 1)
	go func() { // blocks on the open RPC until the restore ends it
		evs, err := next(s, 60*time.Second)
		done <- result{evs, err}
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	_, err = outsider.RestoreSnapshot(ctx, p, bytes.NewReader(snap.Bytes()))
	cancel()
	if err != nil {
		t.Fatalf("RestoreSnapshot(%d): %v", p, err)
	}
	begin = time.Now()
	r := <-done
	t.Logf("remote stream at 10 ended %v after the restore to head 5: %v", time.Since(begin).Round(time.Millisecond), r.err)
	if !errors.Is(r.err, storage.ErrCursorAhead) {
		t.Errorf("remote stream at 10 after the restore to head 5: got %d events, %v; want ErrCursorAhead", len(r.evs), r.err)
	}
}

// stalledWriter takes the first write and blocks every later one until
// released, as a client that reads the first chunk of a snapshot and then
// stops reading.
type stalledWriter struct {
	first   chan struct{} // closed by the first write
	release chan struct{}
	once    sync.Once
}

func newStalledWriter() *stalledWriter {
	return &stalledWriter{first: make(chan struct{}), release: make(chan struct{})}
}

func (w *stalledWriter) Write(b []byte) (int, error) {
	select {
	case <-w.first:
		<-w.release
		return 0, errors.New("the client went away")
	default:
		close(w.first)
		return len(b), nil
	}
}

func (w *stalledWriter) letGo() { w.once.Do(func() { close(w.release) }) }

// TestSaveSnapshotStalledClient saves a snapshot into a client that reads
// the first chunk and then stalls, through the partition's leader itself
// and forwarded to it from another node. Neither may keep the leader's
// node from closing: the snapshot must not hold a read transaction of
// the state file (which Close waits for) while the client takes its time.
func TestSaveSnapshotStalledClient(t *testing.T) {
	t.Parallel()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Partitions: 1})
	const p = 0
	ch := channelIn("stall", p, 1)
	createChannels(t, c.Node(0), []string{ch})
	// Past the buffers between a forwarding node and the leader (HTTP/2
	// flow control windows, socket buffers): about 12 MB of state that
	// does not compress (the RPC may gzip it), so a forwarded stream
	// blocks on the leader.
	rnd := rand.New(rand.NewPCG(1, 2))
	letters := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	texts := make([]string, 150)
	for k := range texts {
		b := make([]byte, storage.MaxTextRunes)
		for i := range b {
			b[i] = letters[rnd.IntN(len(letters))]
		}
		texts[k] = string(b)
	}
	begin := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := g; k < len(texts); k += 4 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := c.Node(k%3).Apply(ctx, clustertest.Post(ch, texts[k], fmt.Sprintf("big-%d", k)))
				cancel()
				if err != nil {
					t.Errorf("post %d: %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("posted %d messages of %d characters in %v", len(texts), storage.MaxTextRunes, time.Since(begin).Round(time.Millisecond))

	leaderOf := func() *clustertest.Node {
		var m *clustertest.Node
		clustertest.CheckFor(t, 30*time.Second, 20*time.Millisecond, "partition leader", func() bool {
			for _, x := range c.Members() {
				if n := x.Cluster(); n != nil && n.Replica(p) != nil && n.Replica(p).IsLeader() {
					m = x
					return true
				}
			}
			return false
		})
		return m
	}
	for _, forwarded := range []bool{false, true} {
		name := map[bool]string{false: "leader", true: "forwarded"}[forwarded]
		t.Run(name, func(t *testing.T) {
			c.WaitReady(30 * time.Second)
			leader := leaderOf()
			via := leader.Cluster()
			if forwarded {
				for _, n := range c.Running() {
					if n.ID() != leader.ID {
						via = n
						break
					}
				}
			}
			w := newStalledWriter()
			defer w.letGo()
			saved := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				_, err := via.SaveSnapshot(ctx, p, w)
				saved <- err
			}()
			select {
			case <-w.first:
			case err := <-saved:
				t.Fatalf("SaveSnapshot via %s ended before the client stalled: %v", via.ID(), err)
			case <-time.After(30 * time.Second):
				t.Fatalf("SaveSnapshot via %s wrote nothing within 30s", via.ID())
			}
			begin := time.Now()
			stopped := make(chan struct{})
			go func() { leader.Stop(); close(stopped) }()
			select {
			case <-stopped:
				t.Logf("leader %s stopped in %v while a snapshot client via %s stalled",
					leader.ID, time.Since(begin).Round(time.Millisecond), via.ID())
			case <-time.After(30 * time.Second):
				w.letGo()
				let := time.Now()
				<-stopped
				t.Fatalf("leader %s still closing after 30s while a snapshot client via %s stalled; "+
					"it closed %v after the client let go", leader.ID, via.ID(), time.Since(let).Round(time.Millisecond))
			}
			w.letGo()
			<-saved
			leader.Restart()
		})
	}
}
