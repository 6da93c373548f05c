package check

import (
	"fmt"
	"sort"
)

// Order checks each channel's order: the final reads through every node
// agree; the final history's seqs run 1, 2, 3 … without a gap; every
// acknowledged attempt of a post got the seq the post is stored at; a post
// acknowledged before another post's first attempt was invoked has the
// lower seq; and every read holds a prefix of the final history.
func Order(h History) Verdict {
	fin := finals(h)
	byPost, keys := attempts(h)
	var vs []Violation
	for _, ch := range channels(h) {
		reads := fin[ch]
		if len(reads) == 0 {
			continue // Lost reports acknowledged posts without a final read
		}
		ref := reads[0]
		for _, r := range reads[1:] {
			if i, ok := samePrefix(ref.done.Messages, r.done.Messages); !ok || len(r.done.Messages) != len(ref.done.Messages) {
				vs = append(vs, Violation{What: fmt.Sprintf("%s: final reads via %s and %s disagree at position %d (%s vs %s)",
					ch, ref.inv.Node, r.inv.Node, i, at(ref.done.Messages, i), at(r.done.Messages, i)),
					Ops: []Op{ref.done, r.done}})
			}
		}
		for i, m := range ref.done.Messages {
			if m.Seq != uint64(i)+1 {
				vs = append(vs, Violation{What: fmt.Sprintf("%s: final history position %d holds seq %d (%s), want seq %d: seqs must run from 1 without a gap",
					ch, i, m.Seq, m.ClientMsgID, i+1), Ops: []Op{ref.done}})
				break
			}
		}
	}
	for _, k := range keys {
		reads := fin[k.channel]
		if len(reads) == 0 {
			continue
		}
		seqs := stored(reads[0].done.Messages)[k.id]
		if len(seqs) == 0 {
			continue // Lost or Indeterminate reports it
		}
		for _, a := range byPost[k] {
			if a.ok() && a.done.Seq != seqs[0] {
				vs = append(vs, Violation{What: fmt.Sprintf("%s: post %s acknowledged with seq %d, stored at seq %d", k.channel, k.id, a.done.Seq, seqs[0]),
					Ops: []Op{a.inv, a.done, reads[0].done}})
			}
		}
	}
	vs = append(vs, realTimeOrder(byPost, keys)...)
	reads := 0
	for _, r := range operations(h, Read) {
		ref := fin[r.inv.Channel]
		if !r.ok() || r.inv.Final || len(ref) == 0 {
			continue
		}
		reads++
		if i, ok := samePrefix(ref[0].done.Messages, r.done.Messages); !ok {
			vs = append(vs, Violation{What: fmt.Sprintf("%s: read via %s is not a prefix of the final history: position %d holds %s, final %s",
				r.inv.Channel, r.inv.Node, i, at(r.done.Messages, i), at(ref[0].done.Messages, i)),
				Ops: []Op{r.inv, r.done, ref[0].done}})
		}
	}
	return verdict("order", vs, "%d channels, %d posts, %d reads checked against the final history", len(fin), len(keys), reads)
}

// samePrefix reports whether short is a prefix of long, and else the
// first position where they differ.
func samePrefix(long, short []Message) (int, bool) {
	for i, m := range short {
		if i >= len(long) || long[i] != m {
			return i, false
		}
	}
	return len(short), true
}

// at describes position i of msgs.
func at(msgs []Message, i int) string {
	if i >= len(msgs) {
		return "nothing"
	}
	return fmt.Sprintf("%s at seq %d", msgs[i].ClientMsgID, msgs[i].Seq)
}

// realTimeOrder checks, per channel, that a post acknowledged before
// another post's first attempt was invoked has the lower seq. A post's
// first attempt counts because any of its attempts may be the one that
// applied, and a retry returns the first result.
func realTimeOrder(byPost map[postID][]operation, keys []postID) []Violation {
	type ackd struct {
		index int // of the first acknowledgement
		seq   uint64
		op    operation
	}
	acks := map[string][]ackd{}
	for _, k := range keys {
		if a, ok := firstAck(byPost[k]); ok {
			acks[k.channel] = append(acks[k.channel], ackd{a.done.Index, a.done.Seq, a})
		}
	}
	for _, as := range acks {
		sort.Slice(as, func(i, j int) bool { return as[i].index < as[j].index })
	}
	var vs []Violation
	next := map[string]int{}      // per channel, acks merged so far
	highest := map[string]*ackd{} // per channel, the highest seq acknowledged so far
	for _, k := range keys {      // in order of first invoke
		as := acks[k.channel]
		first := byPost[k][0].inv.Index
		for next[k.channel] < len(as) && as[next[k.channel]].index < first {
			a := &as[next[k.channel]]
			if hi := highest[k.channel]; hi == nil || a.seq > hi.seq {
				highest[k.channel] = a
			}
			next[k.channel]++
		}
		b, ok := firstAck(byPost[k])
		hi := highest[k.channel]
		if !ok || hi == nil || b.done.Seq > hi.seq {
			continue
		}
		vs = append(vs, Violation{What: fmt.Sprintf("%s: post %s was acknowledged at seq %d before post %s was first sent, which got seq %d: want a higher seq",
			k.channel, hi.op.inv.ClientMsgID, hi.seq, k.id, b.done.Seq), Ops: []Op{hi.op.done, byPost[k][0].inv, b.done}})
	}
	return vs
}
