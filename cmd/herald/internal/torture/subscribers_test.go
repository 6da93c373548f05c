package torture

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/cluster/check"
)

// history3 is a history whose final read of channel c holds posts a, b
// and c at seqs 1 to 3, and a linearizable read of c, invoked at t0+10s,
// that saw only seq 1.
func history3(t0 time.Time) check.History {
	final := []check.Message{{Seq: 1, ClientMsgID: "a"}, {Seq: 2, ClientMsgID: "b"}, {Seq: 3, ClientMsgID: "c"}}
	return check.History{
		{ID: 1, Kind: check.Read, Type: check.Invoke, Channel: "c", Time: t0.Add(10 * time.Second)},
		{ID: 1, Kind: check.Read, Type: check.OK, Channel: "c", Messages: final[:1], Time: t0.Add(11 * time.Second)},
		{ID: 2, Kind: check.Read, Type: check.Invoke, Channel: "c", Final: true, Time: t0.Add(20 * time.Second)},
		{ID: 2, Kind: check.Read, Type: check.OK, Channel: "c", Final: true, Messages: final, Time: t0.Add(21 * time.Second)},
	}
}

func TestCheckSubscribers(t *testing.T) {
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	d := func(seq uint64, id string, s int) Delivery {
		return Delivery{Subscriber: "s", Node: "n1", Channel: "c", Seq: seq, ClientMsgID: id, Time: at(s)}
	}
	chans := map[string]string{"s": "c"}
	for _, tc := range []struct {
		name string
		ds   []Delivery
		last uint64
		want string // "" = valid
	}{
		{"every event once, in order", []Delivery{d(1, "a", 11), d(2, "b", 12), d(3, "c", 13)}, 3, ""},
		{"gap", []Delivery{d(1, "a", 11), d(3, "c", 13)}, 3, "a gap of 1"},
		{"duplicate", []Delivery{d(1, "a", 11), d(2, "b", 12), d(2, "b", 12), d(3, "c", 13)}, 3, "a duplicate or going back"},
		{"going back", []Delivery{d(1, "a", 11), d(3, "c", 12), d(2, "b", 13)}, 3, "going back"},
		{"uncommitted", []Delivery{d(1, "a", 11), d(2, "x", 12), d(3, "c", 13)}, 3, "uncommitted or wrong event"},
		{"never caught up", []Delivery{d(1, "a", 11)}, 1, "events never delivered"},
		{"read behind a subscriber", []Delivery{d(1, "a", 1), d(2, "b", 2), d(3, "c", 3)}, 3, "had received seq 3 before the read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := checkSubscribers(tc.ds, history3(t0), chans, map[string]uint64{"s": tc.last})
			switch {
			case tc.want == "" && !v.Valid:
				t.Fatalf("got %s, want valid", v)
			case tc.want != "" && (v.Valid || !strings.Contains(v.String(), tc.want)):
				t.Fatalf("got %s, want a violation saying %q", v, tc.want)
			}
		})
	}
}
