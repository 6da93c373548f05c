package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/check"
)

// opTimeout bounds one client call; the servers answer within their
// request timeout (5 s), or sooner when they cannot reach a leader.
const opTimeout = 6 * time.Second

// workload is what the clients do, through the public Connect API only:
// posts with unique client_msg_ids, each retried with the same id while
// its outcome is unknown, and linearizable and stale history reads.
type workload struct {
	rec      *check.Recorder
	nodes    []string // node ids, in order
	addrs    map[string]string
	clients  map[string]heraldv1connect.MessageServiceClient
	channels []string
	seed     int64
	// retryAcked sends every acknowledged post once more with its
	// client_msg_id (the duplicates canary): the cluster must answer
	// with the first result.
	retryAcked bool
}

func newWorkload(rec *check.Recorder, c *procs, channels []string, seed int64) *workload {
	w := &workload{rec: rec, addrs: map[string]string{}, clients: map[string]heraldv1connect.MessageServiceClient{},
		channels: channels, seed: seed}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	for _, p := range c.nodes {
		w.nodes = append(w.nodes, p.id)
		w.addrs[p.id] = p.http
		w.clients[p.id] = heraldv1connect.NewMessageServiceClient(&http.Client{Transport: tr}, "http://"+p.http, connect.WithProtoJSON())
	}
	return w
}

// createChannels creates every channel, through any node, retrying while
// the cluster elects.
func (w *workload) createChannels(ctx context.Context) error {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for i, ch := range w.channels {
		deadline := time.Now().Add(30 * time.Second)
		for {
			c := heraldv1connect.NewChannelServiceClient(&http.Client{Transport: tr}, "http://"+w.addrs[w.nodes[i%len(w.nodes)]], connect.WithProtoJSON())
			cctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := c.CreateChannel(cctx, &heraldv1.CreateChannelRequest{ChannelId: ch})
			cancel()
			if err == nil || connect.CodeOf(err) == connect.CodeAlreadyExists {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("torture: create channel %s: %w", ch, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// run starts posters and readers and returns when stop ends and the calls
// in flight have finished.
func (w *workload) run(stop context.Context, posters, readers int) {
	var wg sync.WaitGroup
	for i := range posters {
		wg.Go(func() { w.poster(stop, i) })
	}
	for i := range readers {
		wg.Go(func() { w.reader(stop, i) })
	}
	wg.Wait()
}

// poster posts until stop ends; a post whose outcome is unknown is sent
// again with the same client_msg_id through another node, up to 4 times
// in all, deliberately: the cluster must store it once.
func (w *workload) poster(stop context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(1000+i)))
	process := fmt.Sprintf("poster-%d", i)
	ch := w.channels[i%len(w.channels)] // a few clients a channel, for the linearizability search
	for k := 0; stop.Err() == nil; k++ {
		id := fmt.Sprintf("p%d-%d", i, k)
		for attempt := 0; attempt < 4 && stop.Err() == nil; attempt++ {
			node := w.nodes[rng.IntN(len(w.nodes))]
			typ := w.post(process, node, ch, id)
			if typ == check.OK && w.retryAcked {
				w.post(process, w.nodes[rng.IntN(len(w.nodes))], ch, id)
			}
			if typ != check.Info {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// post makes one attempt and records it; it returns the outcome's type.
func (w *workload) post(process, node, ch, id string) check.Type {
	op := w.rec.Invoke(check.Op{Process: process, Kind: check.Post, Channel: ch, Node: node, ClientMsgID: id})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := w.clients[node].PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: ch, Text: "torture " + id, ClientMsgId: id})
	if err == nil {
		w.rec.Complete(op, check.OK, check.Op{Seq: resp.GetMessage().GetSeq()})
		return check.OK
	}
	typ := classify(err)
	w.rec.Complete(op, typ, check.Op{Error: errorText(err)})
	return typ
}

// classify says what a failed post's error tells about it: Fail when the
// cluster says nothing was applied (or refused the request outright),
// Info when it may have been.
func classify(err error) check.Type {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return check.Info
	}
	switch ce.Meta().Get("Herald-Outcome") {
	case "not-applied":
		return check.Fail
	case "indeterminate":
		return check.Info
	}
	switch ce.Code() {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied,
		connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodeUnauthenticated:
		return check.Fail
	}
	return check.Info // the connection failed, or a deadline: it may have reached a leader
}

func errorText(err error) string {
	s := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Meta().Get("Herald-Outcome") != "" {
		s += " [" + ce.Meta().Get("Herald-Outcome") + "]"
	}
	return strings.TrimSpace(s)
}

// reader reads whole histories until stop ends, linearizable and stale in
// turn, through random nodes.
func (w *workload) reader(stop context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(2000+i)))
	process := fmt.Sprintf("reader-%d", i)
	ch := w.channels[i%len(w.channels)]
	for k := 0; stop.Err() == nil; k++ {
		node := w.nodes[rng.IntN(len(w.nodes))]
		w.read(process, node, ch, k%2 == 1, false)
		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
	}
}

// read reads channel ch's whole history through node and records it.
func (w *workload) read(process, node, ch string, stale, final bool) bool {
	op := w.rec.Invoke(check.Op{Process: process, Kind: check.Read, Channel: ch, Node: node, Stale: stale, Final: final})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var msgs []check.Message
	after := uint64(0)
	pages := 0
	for {
		pages++
		resp, err := w.clients[node].GetHistory(ctx, &heraldv1.GetHistoryRequest{ChannelId: ch, AfterSeq: after,
			Limit: 1000, OldestFirst: true, Stale: stale})
		if err != nil {
			w.rec.Complete(op, check.Info, check.Op{Error: errorText(err)})
			return false
		}
		for _, m := range resp.GetMessages() {
			msgs = append(msgs, check.Message{Seq: m.GetSeq(), ClientMsgID: m.GetClientMsgId()})
		}
		if !resp.GetHasMore() || len(resp.GetMessages()) == 0 {
			break
		}
		after = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq()
	}
	w.rec.Complete(op, check.OK, check.Op{Messages: msgs, Pages: pages})
	return true
}

// drain reads every channel through every node, linearizably, retrying
// each read until it succeeds or within passes.
func (w *workload) drain(within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, node := range w.nodes {
		for _, ch := range w.channels {
			for !w.read("drain", node, ch, false, true) {
				if time.Now().After(deadline) {
					return fmt.Errorf("torture: the final read of %s through %s did not succeed within %v", ch, node, within)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	return nil
}
