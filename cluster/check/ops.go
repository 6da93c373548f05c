package check

import "sort"

// operation is an invoke and its completion; done.Type is "" while the
// history holds no completion (the client was cut short), which counts as
// Info.
type operation struct {
	inv, done Op
}

// ok reports whether the operation was acknowledged.
func (o operation) ok() bool { return o.done.Type == OK }

// doneIndex is where the completion is, or past the end of the history.
func (o operation) doneIndex() int {
	if o.done.Type == "" {
		return int(^uint(0) >> 1)
	}
	return o.done.Index
}

// operations pairs h's invokes with their completions, in invoke order,
// and leaves fault records out.
func operations(h History, kind Kind) []operation {
	byID := map[int]int{}
	var out []operation
	for _, op := range h {
		if op.Kind != kind {
			continue
		}
		if op.Type == Invoke {
			byID[op.ID] = len(out)
			out = append(out, operation{inv: op})
		} else if i, ok := byID[op.ID]; ok {
			out[i].done = op
		}
	}
	return out
}

// finals returns, per channel, the acknowledged final reads.
func finals(h History) map[string][]operation {
	out := map[string][]operation{}
	for _, r := range operations(h, Read) {
		if r.inv.Final && r.ok() {
			out[r.inv.Channel] = append(out[r.inv.Channel], r)
		}
	}
	return out
}

// stored maps each client_msg_id of a read to its seqs there.
func stored(msgs []Message) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, m := range msgs {
		out[m.ClientMsgID] = append(out[m.ClientMsgID], m.Seq)
	}
	return out
}

// postID is a post's identity: a client_msg_id is unique per channel.
type postID struct{ channel, id string }

// attempts groups post attempts by channel and client_msg_id, and returns
// the keys in order of first invoke.
func attempts(h History) (map[postID][]operation, []postID) {
	out := map[postID][]operation{}
	var keys []postID
	for _, p := range operations(h, Post) {
		k := postID{p.inv.Channel, p.inv.ClientMsgID}
		if _, ok := out[k]; !ok {
			keys = append(keys, k)
		}
		out[k] = append(out[k], p)
	}
	return out, keys
}

// channels returns every channel posted to or read, sorted.
func channels(h History) []string {
	seen := map[string]bool{}
	var out []string
	for _, op := range h {
		if op.Channel != "" && !seen[op.Channel] {
			seen[op.Channel] = true
			out = append(out, op.Channel)
		}
	}
	sort.Strings(out)
	return out
}
