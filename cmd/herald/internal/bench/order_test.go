package bench

import (
	"fmt"
	"testing"
)

// TestOrderCheck feeds the checker synthetic deliveries after a subscribed
// frame with head_seq 10 and checks what it counts: each kind of
// violation, and which acknowledged seqs it reports as never delivered.
func TestOrderCheck(t *testing.T) {
	tests := []struct {
		name     string
		head     uint64
		seqs     []uint64
		resync   *uint64 // last_sent_seq of a resync_required after seqs
		acked    []uint64
		want     Violations // Lost from missing(acked)
		complete uint64     // complete(complete) must hold ...
		pending  uint64     // ... and complete(pending) must not (0: not checked)
	}{
		{name: "in order", head: 10, seqs: []uint64{11, 12, 13, 14}, acked: []uint64{11, 12, 13, 14},
			complete: 14, pending: 15},
		{name: "gap", head: 10, seqs: []uint64{11, 12, 14, 15}, acked: []uint64{11, 12, 13, 14, 15},
			want: Violations{Gaps: 1, Lost: 1}, complete: 15},
		{name: "duplicate", head: 10, seqs: []uint64{11, 12, 12, 13}, acked: []uint64{11, 12, 13},
			want: Violations{Duplicates: 1}, complete: 13},
		{name: "duplicate of the first", head: 10, seqs: []uint64{11, 11}, acked: []uint64{11},
			want: Violations{Duplicates: 1}, complete: 11},
		{name: "reorder", head: 10, seqs: []uint64{11, 13, 12, 14}, acked: []uint64{11, 12, 13, 14},
			want: Violations{Gaps: 1, Reorders: 1}, complete: 14},
		{name: "from before the head", head: 10, seqs: []uint64{10, 11}, acked: []uint64{11},
			want: Violations{Reorders: 1}, complete: 11},
		{name: "nothing delivered", head: 10, acked: []uint64{11, 12},
			want: Violations{Lost: 2}, complete: 10, pending: 11},
		{name: "resync not counted as loss", head: 10, seqs: []uint64{11, 12}, resync: ptr(12),
			acked: []uint64{11, 12, 13, 14}, complete: 14},
		{name: "resync after a loss", head: 10, seqs: []uint64{11}, resync: ptr(12),
			acked: []uint64{11, 12, 13}, want: Violations{Lost: 1}, pending: 13},
		{name: "every kind", head: 0, seqs: []uint64{1, 3, 2, 2, 5}, acked: []uint64{1, 2, 3, 4, 5},
			want: Violations{Gaps: 2, Reorders: 1, Duplicates: 1, Lost: 1}, complete: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c orderCheck
			c.subscribed(tt.head)
			var flagged int64
			for _, s := range tt.seqs {
				if c.event(s) {
					flagged++
				}
			}
			if tt.resync != nil {
				c.resync(*tt.resync)
			}
			got := c.violations()
			got.Lost = c.missing(tt.acked)
			in := fmt.Sprintf("head %d, seqs %v, resync %v, acked %v", tt.head, tt.seqs, tt.resync, tt.acked)
			if got != tt.want {
				t.Errorf("%s: got %+v, want %+v", in, got, tt.want)
			}
			if want := tt.want.Total() - tt.want.Lost; flagged != want {
				t.Errorf("%s: event flagged %d deliveries, want %d", in, flagged, want)
			}
			if tt.complete > 0 && !c.complete(tt.complete) {
				t.Errorf("%s: complete(%d) = false, want true", in, tt.complete)
			}
			if tt.pending > 0 && c.complete(tt.pending) {
				t.Errorf("%s: complete(%d) = true, want false", in, tt.pending)
			}
		})
	}
}

// TestOrderCheckBeforeSubscribed counts an event that came before the
// subscription's subscribed frame.
func TestOrderCheckBeforeSubscribed(t *testing.T) {
	var c orderCheck
	if !c.event(1) {
		t.Error("event before subscribed: not flagged")
	}
	c.subscribed(0)
	if c.event(1) {
		t.Error("seq 1 after subscribed with head 0: flagged")
	}
	if got, want := c.violations(), (Violations{Reorders: 1}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func ptr(v uint64) *uint64 { return &v }
