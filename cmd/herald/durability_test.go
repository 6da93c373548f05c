package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// ack is one acknowledged post.
type ack struct {
	seq  uint64
	id   string // client_msg_id
	text string
}

// TestKillAndRestart posts to one channel sequentially while another
// goroutine posts to a second channel, SIGKILLs herald dev right after the
// last acknowledgement, restarts it on the same data directory, and checks
// that every acknowledged post is there exactly once, in acknowledgement
// order, and that retrying it is answered as a duplicate with the same seq.
func TestKillAndRestart(t *testing.T) {
	t.Parallel()
	n := 2000
	if testing.Short() {
		n = 200
	}
	dir := t.TempDir()
	p := startDev(t, devOptions{dataDir: dir})
	firstReady := p.StartToReady
	createChannel(t, p, "durable")
	createChannel(t, p, "noise")

	// The concurrent writer posts to "noise" until a post fails, which the
	// kill below makes happen; the failed post is in flight, and may or
	// may not have been committed.
	var (
		noiseAcks     []ack
		noiseInFlight ack
		noiseErr      error
		noiseErrAt    time.Time
		wg            sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			a := ack{id: fmt.Sprintf("noise-%06d", i), text: fmt.Sprintf("noise %d", i)}
			resp, err := post(p.Messages, "noise", a.id, a.text)
			if err != nil {
				noiseInFlight, noiseErr, noiseErrAt = a, err, time.Now()
				return
			}
			a.seq = resp.GetMessage().GetSeq()
			noiseAcks = append(noiseAcks, a)
		}
	})

	acks := make([]ack, 0, n)
	begin := time.Now()
	for i := range n {
		a := ack{id: fmt.Sprintf("durable-%06d", i), text: fmt.Sprintf("durable message %d", i)}
		resp, err := post(p.Messages, "durable", a.id, a.text)
		if err != nil {
			p.Kill()
			wg.Wait()
			t.Fatalf("PostMessage %d (%s): %v", i, a.id, err)
		}
		a.seq = resp.GetMessage().GetSeq()
		if resp.GetDuplicate() {
			t.Errorf("PostMessage %d (%s): got duplicate=true for a first post, want false", i, a.id)
		}
		// The channel holds only these posts, so their seqs are gap-free.
		if want := uint64(i + 1); a.seq != want {
			t.Errorf("PostMessage %d (%s): got seq %d, want %d", i, a.id, a.seq, want)
		}
		acks = append(acks, a)
	}
	killedAt := time.Now()
	p.Kill()
	wg.Wait()
	t.Logf("%d sequential posts in %v (%v each) beside %d concurrent ones; then SIGKILL",
		n, killedAt.Sub(begin).Round(time.Millisecond), (killedAt.Sub(begin) / time.Duration(n)).Round(time.Microsecond), len(noiseAcks))
	if noiseErr == nil {
		t.Fatal("the concurrent writer stopped without an error; want it to fail once the process is killed")
	}
	if noiseErrAt.Before(killedAt) {
		t.Errorf("concurrent PostMessage %s failed before the kill: %v", noiseInFlight.id, noiseErr)
	}
	if len(noiseAcks) == 0 {
		t.Errorf("got 0 acknowledged concurrent posts, want some: the writers did not overlap")
	}

	q := startDev(t, devOptions{dataDir: dir, httpAddr: p.HTTPAddr, raftAddr: p.RaftAddr})
	t.Logf("start-to-ready: first start %v, restart after SIGKILL %v",
		firstReady.Round(time.Millisecond), q.StartToReady.Round(time.Millisecond))

	checkHistory(t, "durable", history(t, q.Messages, "durable"), acks, nil)
	inFlight := checkHistory(t, "noise", history(t, q.Messages, "noise"), noiseAcks, &noiseInFlight)

	// Dedup survives the crash: every acknowledged post, retried, is a
	// duplicate with its first seq.
	for _, set := range []struct {
		channel string
		acks    []ack
	}{{"durable", acks}, {"noise", noiseAcks}} {
		for i, a := range set.acks {
			resp, err := post(q.Messages, set.channel, a.id, a.text)
			if err != nil {
				t.Fatalf("retry PostMessage %s %s: %v", set.channel, a.id, err)
			}
			if got := resp.GetMessage().GetSeq(); got != a.seq || !resp.GetDuplicate() {
				t.Errorf("retry PostMessage %s #%d (%s): got seq %d duplicate=%v, want seq %d duplicate=true",
					set.channel, i, a.id, got, resp.GetDuplicate(), a.seq)
			}
		}
	}
	// The in-flight post, retried, is a duplicate if and only if it had
	// been committed.
	resp, err := post(q.Messages, "noise", noiseInFlight.id, noiseInFlight.text)
	if err != nil {
		t.Fatalf("retry the in-flight PostMessage %s: %v", noiseInFlight.id, err)
	}
	if inFlight != nil {
		if resp.GetMessage().GetSeq() != inFlight.GetSeq() || !resp.GetDuplicate() {
			t.Errorf("retry the in-flight PostMessage %s: got seq %d duplicate=%v, want seq %d duplicate=true (it is in history)",
				noiseInFlight.id, resp.GetMessage().GetSeq(), resp.GetDuplicate(), inFlight.GetSeq())
		}
	} else if resp.GetDuplicate() {
		t.Errorf("retry the in-flight PostMessage %s: got duplicate=true seq %d, want a new post (it is not in history)",
			noiseInFlight.id, resp.GetMessage().GetSeq())
	}
	t.Logf("in-flight post %s committed before the kill: %v", noiseInFlight.id, inFlight != nil)
}

// checkHistory checks that got holds exactly the acknowledged posts, in
// order, each once, plus at most the in-flight post after them. It returns
// the in-flight post's message if it is there.
func checkHistory(t *testing.T, channel string, got []*heraldv1.Message, acks []ack, inFlight *ack) *heraldv1.Message {
	t.Helper()
	seen := make(map[string]int)
	for _, m := range got {
		seen[m.GetClientMsgId()]++
	}
	for id, c := range seen {
		if c > 1 {
			t.Errorf("%s history: client_msg_id %s appears %d times, want once", channel, id, c)
		}
	}
	for i, a := range acks {
		if i >= len(got) {
			t.Errorf("%s history: got %d messages, want at least the %d acknowledged; first missing: %s (seq %d)",
				channel, len(got), len(acks), a.id, a.seq)
			return nil
		}
		m := got[i]
		if m.GetSeq() != a.seq || m.GetClientMsgId() != a.id || m.GetText() != a.text {
			t.Errorf("%s history[%d]: got seq %d %s %q, want seq %d %s %q (acknowledged #%d)",
				channel, i, m.GetSeq(), m.GetClientMsgId(), m.GetText(), a.seq, a.id, a.text, i)
		}
		if i > 0 && a.seq <= acks[i-1].seq {
			t.Errorf("%s: acknowledged #%d got seq %d after seq %d; want seq increasing in acknowledgement order",
				channel, i, a.seq, acks[i-1].seq)
		}
	}
	extra := got[len(acks):]
	switch {
	case len(extra) == 0:
		return nil
	case len(extra) == 1 && inFlight != nil && extra[0].GetClientMsgId() == inFlight.id && extra[0].GetText() == inFlight.text:
		return extra[0]
	}
	for _, m := range extra {
		t.Errorf("%s history: got unexpected message seq %d %s %q after the %d acknowledged, want none (or only the in-flight post)",
			channel, m.GetSeq(), m.GetClientMsgId(), m.GetText(), len(acks))
	}
	return nil
}

// TestGracefulShutdown stops herald dev with SIGINT (Ctrl-C) and then with
// SIGTERM, each time expecting exit status 0, and restarts it, on other
// ports, with all its data.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, devOptions{dataDir: dir})
	createChannel(t, p, "general")
	var acks []ack
	postSome := func(p *proc, k int) {
		t.Helper()
		for range k {
			a := ack{id: fmt.Sprintf("m%d", len(acks)), text: fmt.Sprintf("hello %d", len(acks))}
			resp, err := post(p.Messages, "general", a.id, a.text)
			if err != nil {
				t.Fatalf("PostMessage %s: %v", a.id, err)
			}
			a.seq = resp.GetMessage().GetSeq()
			acks = append(acks, a)
		}
	}
	postSome(p, 20)

	for i, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		code, took := p.Signal(sig)
		t.Logf("%s: exited with status %d %v after %v", p.name, code, took.Round(time.Millisecond), sig)
		if code != 0 {
			t.Fatalf("exit status after %v: got %d, want 0\nstderr:\n%s", sig, code, p.Stderr())
		}
		// Restart on other ports: the data directory does not tie the
		// node to its old addresses.
		p = startDev(t, devOptions{dataDir: dir})
		checkHistory(t, "general", history(t, p.Messages, "general"), acks, nil)
		postSome(p, 5)
		if i == 1 {
			checkHistory(t, "general", history(t, p.Messages, "general"), acks, nil)
		}
	}
}

// TestInterruptBeforeReady presses Ctrl-C while the first start is still
// electing leaders: herald dev exits with status 0, and the data directory
// it leaves starts and serves every partition.
func TestInterruptBeforeReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := launchDev(t, devOptions{dataDir: dir, httpAddr: freeAddr(t), raftAddr: freeAddr(t), args: []string{"--partitions", "4"}})
	deadline := time.Now().Add(readyTimeout)
	for !strings.Contains(p.Stdout(), "Try it:") {
		if time.Now().After(deadline) {
			p.Kill()
			t.Fatalf("%s: no banner within %v; stdout:\n%s\nstderr:\n%s", p.name, readyTimeout, p.Stdout(), p.Stderr())
		}
		select {
		case <-p.done:
			t.Fatalf("%s: exited before its banner: %v; stderr:\n%s", p.name, p.err, p.Stderr())
		case <-time.After(time.Millisecond):
		}
	}
	if strings.Contains(p.Stdout(), "Ready in") {
		t.Logf("%s: was ready before the interrupt; the test checked a plain shutdown", p.name)
	}
	code, took := p.Signal(os.Interrupt)
	t.Logf("%s: exited with status %d %v after SIGINT", p.name, code, took.Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit status after SIGINT before ready: got %d, want 0\nstderr:\n%s", code, p.Stderr())
	}
	q := startDev(t, devOptions{dataDir: dir})
	postToEveryPartition(t, q, 4)
}

// TestGracefulShutdownWithClients sends SIGINT while a Connect Subscribe
// stream and a WebSocket subscription are open and a writer is posting:
// the process still exits with status 0 within the bound, both streams
// end, and after a restart every acknowledged post is there once.
func TestGracefulShutdownWithClients(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, devOptions{dataDir: dir})
	createChannel(t, p, "general")

	// A Connect stream, from the first event on.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := p.Messages.Subscribe(ctx, &heraldv1.SubscribeRequest{ChannelId: "general", AfterSeq: proto.Uint64(0)})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetSubscribed() == nil {
		t.Fatalf("Subscribe: got first message %v (err %v), want subscribed", stream.Msg(), stream.Err())
	}
	streamEvents := make(chan uint64, 1)
	var streamWG sync.WaitGroup
	streamWG.Go(func() {
		defer close(streamEvents)
		var last uint64
		for stream.Receive() {
			if e := stream.Msg().GetEvent(); e != nil {
				last = e.GetSeq()
			}
		}
		streamEvents <- last
	})

	ws := dialWS(t, p)
	ws.send(t, `{"id":"s1","subscribe":{"channelId":"general"}}`)
	ws.await(t, `"subscribed"`)

	var (
		acks     []ack
		inFlight ack
		postErr  error
		wg       sync.WaitGroup
		ackedOne = make(chan struct{})
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			a := ack{id: fmt.Sprintf("w%06d", i), text: fmt.Sprintf("written %d", i)}
			resp, err := post(p.Messages, "general", a.id, a.text)
			if err != nil {
				inFlight, postErr = a, err
				return
			}
			a.seq = resp.GetMessage().GetSeq()
			acks = append(acks, a)
			if i == 9 {
				close(ackedOne)
			}
		}
	})
	select {
	case <-ackedOne:
	case <-time.After(rpcTimeout):
		p.Kill()
		wg.Wait()
		t.Fatalf("no 10 posts acknowledged within %v: %v", rpcTimeout, postErr)
	}

	code, took := p.Signal(os.Interrupt)
	wg.Wait()
	t.Logf("%s: exited with status %d %v after SIGINT with 2 streams open and a writer; %d posts acknowledged, then %v",
		p.name, code, took.Round(time.Millisecond), len(acks), postErr)
	if code != 0 {
		t.Errorf("exit status after SIGINT with open streams: got %d, want 0\nstderr:\n%s", code, p.Stderr())
	}
	streamWG.Wait()
	if last := <-streamEvents; last > uint64(len(acks)+1) {
		t.Errorf("Subscribe stream: got last event seq %d, want at most %d (acknowledged posts plus the one in flight)", last, len(acks)+1)
	}
	select {
	case <-ws.closed:
	case <-time.After(exitTimeout):
		t.Errorf("WebSocket still open %v after the process exited, want it closed", exitTimeout)
	}

	q := startDev(t, devOptions{dataDir: dir})
	checkHistory(t, "general", history(t, q.Messages, "general"), acks, &inFlight)
}

// wsClient is a WebSocket connection to /ws that collects text frames.
type wsClient struct {
	gws.BuiltinEventHandler
	conn   *gws.Conn
	mu     sync.Mutex // guards following
	frames []string
	closed chan struct{} // closed by OnClose
}

func dialWS(t *testing.T, p *proc) *wsClient {
	t.Helper()
	c := &wsClient{closed: make(chan struct{})}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + p.HTTPAddr + "/ws"})
	if err != nil {
		t.Fatalf("dial ws://%s/ws: %v", p.HTTPAddr, err)
	}
	c.conn = conn
	go conn.ReadLoop() // ends when the connection closes, which OnClose reports
	t.Cleanup(func() {
		_ = conn.NetConn().Close() // best effort: the server may have closed it
		<-c.closed
	})
	return c
}

func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c.mu.Lock()
	c.frames = append(c.frames, m.Data.String())
	c.mu.Unlock()
}

func (c *wsClient) OnClose(*gws.Conn, error) { close(c.closed) }

func (c *wsClient) send(t *testing.T, frame string) {
	t.Helper()
	if err := c.conn.WriteString(frame); err != nil {
		t.Fatalf("ws send %s: %v", frame, err)
	}
}

// await waits for a frame containing s.
func (c *wsClient) await(t *testing.T, s string) string {
	t.Helper()
	deadline := time.Now().Add(rpcTimeout)
	for {
		c.mu.Lock()
		for _, f := range c.frames {
			if strings.Contains(f, s) {
				c.mu.Unlock()
				return f
			}
		}
		frames := slices.Clone(c.frames)
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("ws: no frame containing %s within %v; got %q", s, rpcTimeout, frames)
		}
		select {
		case <-c.closed:
			t.Fatalf("ws: closed while waiting for a frame containing %s; got %q", s, frames)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
