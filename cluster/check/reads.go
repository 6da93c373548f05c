package check

import (
	"fmt"
	"sort"
)

// StaleReads checks that every acknowledged linearizable read of a channel
// holds every post to it acknowledged before the read was invoked. Stale
// reads may lag; Order checks that they hold a prefix of the final
// history.
func StaleReads(h History) Verdict {
	byPost, keys := attempts(h)
	type ackd struct {
		index int
		op    operation
	}
	acks := map[string][]ackd{}
	for _, k := range keys {
		if a, ok := firstAck(byPost[k]); ok {
			acks[k.channel] = append(acks[k.channel], ackd{a.done.Index, a})
		}
	}
	for _, as := range acks {
		sort.Slice(as, func(i, j int) bool { return as[i].index < as[j].index })
	}
	var vs []Violation
	reads := 0
	for _, r := range operations(h, Read) {
		if !r.ok() || r.inv.Stale {
			continue
		}
		reads++
		got := stored(r.done.Messages)
		var missing []Op
		for _, a := range acks[r.inv.Channel] {
			if a.index >= r.inv.Index {
				break
			}
			if _, ok := got[a.op.inv.ClientMsgID]; !ok {
				missing = append(missing, a.op.done)
			}
		}
		if len(missing) > 0 {
			vs = append(vs, Violation{What: fmt.Sprintf("%s: linearizable read via %s misses %d posts acknowledged before it was sent, first %s",
				r.inv.Channel, r.inv.Node, len(missing), missing[0].ClientMsgID),
				Ops: append([]Op{r.inv, r.done}, missing[:min(len(missing), 5)]...)})
		}
	}
	return verdict("stale-reads", vs, "%d linearizable reads, %d stale", reads, len(vs))
}
