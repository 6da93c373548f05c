package check_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald/cluster/check"
)

// builder writes synthetic histories.
type builder struct{ r check.Recorder }

// invoke sends a post attempt of id to ch.
func (b *builder) invoke(proc, ch, id string) int {
	return b.r.Invoke(check.Op{Kind: check.Post, Process: proc, Channel: ch, Node: "n1", ClientMsgID: id})
}

// done completes a post attempt.
func (b *builder) done(op int, typ check.Type, seq uint64) {
	b.r.Complete(op, typ, check.Op{Seq: seq})
}

// post is a post attempt that completes before anything else happens.
func (b *builder) post(proc, ch, id string, typ check.Type, seq uint64) {
	b.done(b.invoke(proc, ch, id), typ, seq)
}

// read is a read of ch through node that returns ids at seqs 1, 2, …
func (b *builder) read(ch, node string, stale, final bool, ids ...string) {
	msgs := make([]check.Message, len(ids))
	for i, id := range ids {
		msgs[i] = check.Message{Seq: uint64(i) + 1, ClientMsgID: id}
	}
	b.readMsgs(ch, node, stale, final, msgs)
}

func (b *builder) readMsgs(ch, node string, stale, final bool, msgs []check.Message) {
	op := b.r.Invoke(check.Op{Kind: check.Read, Process: "r", Channel: ch, Node: node, Stale: stale, Final: final})
	b.r.Complete(op, check.OK, check.Op{Messages: msgs})
}

// drain is the final reads of ch through n1, n2 and n3.
func (b *builder) drain(ch string, ids ...string) {
	for _, n := range []string{"n1", "n2", "n3"} {
		b.read(ch, n, false, true, ids...)
	}
}

// valid is a history every checker accepts: concurrent posts, a retry
// that gets the first result back, a stale read that lags, one
// indeterminate post that applied and one that did not, and a post that
// definitely failed.
func valid(b *builder) {
	b.r.Note("partition n1 from n2 n3")
	a := b.invoke("c1", "ch", "a")
	c := b.invoke("c2", "ch", "c")
	b.done(a, check.OK, 1)
	b.done(c, check.OK, 2)
	b.post("c1", "ch", "a", check.OK, 1) // a deliberate retry
	b.read("ch", "n2", true, false, "a") // stale: may lag
	b.read("ch", "n1", false, false, "a", "c")
	d := b.invoke("c1", "ch", "d")
	b.done(d, check.Info, 0)
	b.post("c1", "ch", "d", check.OK, 3) // retried after the indeterminate
	b.post("c2", "ch", "e", check.Info, 0)
	b.post("c2", "ch", "f", check.Info, 0) // applied, never acknowledged
	b.post("c2", "ch", "g", check.Fail, 0)
	b.invoke("c1", "ch", "h") // cut short by the end of the run
	b.r.Note("heal")
	b.drain("ch", "a", "c", "d", "f")
}

func TestCheckersAcceptValidHistory(t *testing.T) {
	var b builder
	valid(&b)
	h := b.r.History()
	for _, v := range check.All(h) {
		if !v.Valid {
			t.Errorf("got %v, want valid", v)
		}
		t.Log(v.Summary)
	}
	ind := check.Indeterminate(h)
	if want := "3 indeterminate posts resolved: 1 applied once, 2 absent; 1 failed posts absent"; ind.Summary != want {
		t.Errorf("indeterminate summary: got %q, want %q", ind.Summary, want)
	}
}

// TestCheckersCatchViolations shows that each checker can fail: each
// history breaks one guarantee.
func TestCheckersCatchViolations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		checker check.Checker
		build   func(b *builder)
		want    string // in the violation's text
	}{
		{"lost", check.Lost, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c1", "ch", "b", check.OK, 2)
			b.drain("ch", "a")
		}, "acknowledged post b to ch at seq 2 is not in the final history"},
		{"lost without a final read", check.Lost, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
		}, "no final read"},
		{"duplicate", check.Duplicates, func(b *builder) {
			b.post("c1", "ch", "a", check.Info, 0)
			b.post("c1", "ch", "a", check.OK, 2)
			b.drain("ch", "a", "a")
		}, "client_msg_id a stored 2 times in ch, at seqs [1 2]"},
		{"duplicate in a stale read", check.Duplicates, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.read("ch", "n2", true, false, "a", "a")
			b.drain("ch", "a")
		}, "stored 2 times"},
		{"final reads disagree", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c2", "ch", "b", check.OK, 2)
			b.read("ch", "n1", false, true, "a", "b")
			b.read("ch", "n2", false, true, "b", "a")
		}, "final reads via n1 and n2 disagree at position 0 (a at seq 1 vs b at seq 1)"},
		{"final read shorter", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.read("ch", "n1", false, true, "a")
			b.read("ch", "n3", false, true)
		}, "disagree at position 0 (a at seq 1 vs nothing)"},
		{"seq gap", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c1", "ch", "b", check.OK, 3)
			msgs := []check.Message{{Seq: 1, ClientMsgID: "a"}, {Seq: 3, ClientMsgID: "b"}}
			b.readMsgs("ch", "n1", false, true, msgs)
		}, "position 1 holds seq 3 (b), want seq 2"},
		{"acknowledged seq differs", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c1", "ch", "b", check.OK, 2)
			b.post("c1", "ch", "b", check.OK, 3) // a retry that was not deduplicated
			b.drain("ch", "a", "b")
		}, "post b acknowledged with seq 3, stored at seq 2"},
		{"reordered", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 2)
			b.post("c1", "ch", "b", check.OK, 1)
			b.drain("ch", "b", "a")
		}, "post a was acknowledged at seq 2 before post b was first sent, which got seq 1"},
		{"read not a prefix", check.Order, func(b *builder) {
			b.post("c1", "ch", "a", check.Info, 0)
			b.read("ch", "n2", true, false, "a") // a never committed
			b.post("c1", "ch", "b", check.OK, 1)
			b.drain("ch", "b")
		}, "read via n2 is not a prefix of the final history: position 0 holds a at seq 1, final b at seq 1"},
		{"stale linearizable read", check.StaleReads, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c1", "ch", "b", check.OK, 2)
			b.read("ch", "n3", false, false, "a")
			b.drain("ch", "a", "b")
		}, "linearizable read via n3 misses 1 posts acknowledged before it was sent, first b"},
		{"not linearizable: reordered", check.Linearizable, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 2)
			b.post("c1", "ch", "b", check.OK, 1)
			b.drain("ch", "b", "a")
		}, "ch: 5 operations are not linearizable as an append-only log"},
		{"not linearizable: stale read", check.Linearizable, func(b *builder) {
			b.post("c1", "ch", "a", check.OK, 1)
			b.post("c1", "ch", "b", check.OK, 2)
			b.read("ch", "n3", false, false, "a")
			b.drain("ch", "a", "b")
		}, "not linearizable"},
		{"not linearizable: a read sees a post its later read lost", check.Linearizable, func(b *builder) {
			p := b.invoke("c1", "ch", "a")
			b.read("ch", "n1", false, false, "a")
			b.read("ch", "n2", false, false)
			b.done(p, check.Info, 0)
			b.drain("ch")
		}, "not linearizable"},
		{"indeterminate stored twice", check.Indeterminate, func(b *builder) {
			b.post("c1", "ch", "a", check.Info, 0)
			b.post("c1", "ch", "a", check.Info, 0)
			b.drain("ch", "a", "a")
		}, "indeterminate post a to ch stored 2 times"},
		{"failed yet stored", check.Indeterminate, func(b *builder) {
			b.post("c1", "ch", "a", check.Fail, 0)
			b.post("c1", "ch", "a", check.Fail, 0)
			b.drain("ch", "a")
		}, "every one of its 2 attempts definitely failed, yet it is stored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b builder
			tc.build(&b)
			v := tc.checker(b.r.History())
			if v.Valid {
				t.Fatalf("got %v, want a violation %q", v, tc.want)
			}
			if !strings.Contains(v.String(), tc.want) {
				t.Errorf("got %v, want a violation saying %q", v, tc.want)
			}
			for _, x := range v.Violations {
				if len(x.Ops) == 0 {
					t.Errorf("violation %q names no operation", x.What)
				}
			}
		})
	}
}

// TestStaleReadMayLag: the same lagging read that fails as linearizable
// passes as stale.
func TestStaleReadMayLag(t *testing.T) {
	var b builder
	b.post("c1", "ch", "a", check.OK, 1)
	b.post("c1", "ch", "b", check.OK, 2)
	b.read("ch", "n3", true, false, "a")
	b.drain("ch", "a", "b")
	for _, v := range check.All(b.r.History()) {
		if !v.Valid {
			t.Errorf("got %v, want valid", v)
		}
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	var b builder
	valid(&b)
	b.post("c1", "ch", "lost", check.OK, 9)
	h := b.r.History()
	var first bytes.Buffer
	if err := check.WriteJSONL(&first, h); err != nil {
		t.Fatal(err)
	}
	back, err := check.ReadJSONL(bytes.NewReader(first.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var second bytes.Buffer
	if err := check.WriteJSONL(&second, back); err != nil {
		t.Fatal(err)
	}
	if first.String() != second.String() {
		t.Errorf("history changed through JSON lines:\n%s\nvs\n%s", first.String(), second.String())
	}
	if got, want := fmt.Sprint(check.All(back)), fmt.Sprint(check.All(h)); got != want {
		t.Errorf("verdicts of the decoded history: got %s, want %s", got, want)
	}
	if _, err := check.ReadJSONL(strings.NewReader("{\"index\":0}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("ReadJSONL of a bad line: got %v, want an error naming line 2", err)
	}
}
