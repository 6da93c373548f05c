package check

import "fmt"

// Lost checks that every acknowledged post is in the final history of its
// channel (the first final read; Order checks that the others agree).
func Lost(h History) Verdict {
	fin := finals(h)
	byPost, keys := attempts(h)
	var vs []Violation
	acked, lost := 0, 0
	for _, k := range keys {
		first, ok := firstAck(byPost[k])
		if !ok {
			continue
		}
		acked++
		reads := fin[k.channel]
		if len(reads) == 0 {
			lost++
			vs = append(vs, Violation{What: fmt.Sprintf("acknowledged post %s to %s: no final read of the channel to find it in", k.id, k.channel),
				Ops: []Op{first.inv, first.done}})
			continue
		}
		if _, ok := stored(reads[0].done.Messages)[k.id]; !ok {
			lost++
			vs = append(vs, Violation{What: fmt.Sprintf("acknowledged post %s to %s at seq %d is not in the final history", k.id, k.channel, first.done.Seq),
				Ops: []Op{first.inv, first.done, reads[0].done}})
		}
	}
	return verdict("lost", vs, "%d acknowledged posts, %d lost", acked, lost)
}

// firstAck returns the first acknowledged attempt.
func firstAck(as []operation) (operation, bool) {
	var first operation
	found := false
	for _, a := range as {
		if a.ok() && (!found || a.done.Index < first.done.Index) {
			first, found = a, true
		}
	}
	return first, found
}

// Duplicates checks that no read, final or not, holds a client_msg_id
// more than once.
func Duplicates(h History) Verdict {
	var vs []Violation
	seen := map[postID]bool{} // reported already
	reads := 0
	for _, r := range operations(h, Read) {
		if !r.ok() {
			continue
		}
		reads++
		for id, seqs := range stored(r.done.Messages) {
			k := postID{r.inv.Channel, id}
			if len(seqs) > 1 && !seen[k] {
				seen[k] = true
				vs = append(vs, Violation{What: fmt.Sprintf("client_msg_id %s stored %d times in %s, at seqs %v", id, len(seqs), k.channel, seqs),
					Ops: []Op{r.inv, r.done}})
			}
		}
	}
	return verdict("duplicates", vs, "%d reads, %d client_msg_ids stored more than once", reads, len(vs))
}
