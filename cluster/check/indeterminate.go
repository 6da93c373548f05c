package check

import "fmt"

// Indeterminate resolves, after the drain, every post that was never
// acknowledged: one that may have applied (an attempt ended Info, or
// never ended) is stored once or not at all, and the verdict counts each;
// one whose every attempt definitely failed is not stored.
func Indeterminate(h History) Verdict {
	fin := finals(h)
	byPost, keys := attempts(h)
	var vs []Violation
	applied, absent, failed := 0, 0, 0
	for _, k := range keys {
		as := byPost[k]
		if _, ok := firstAck(as); ok {
			continue
		}
		maybe := false
		for _, a := range as {
			maybe = maybe || a.done.Type != Fail
		}
		reads := fin[k.channel]
		last := as[len(as)-1]
		if len(reads) == 0 {
			vs = append(vs, Violation{What: fmt.Sprintf("unacknowledged post %s to %s: no final read of the channel to resolve it", k.id, k.channel),
				Ops: []Op{last.inv, last.done}})
			continue
		}
		n := len(stored(reads[0].done.Messages)[k.id])
		switch {
		case !maybe && n > 0:
			vs = append(vs, Violation{What: fmt.Sprintf("post %s to %s: every one of its %d attempts definitely failed, yet it is stored", k.id, k.channel, len(as)),
				Ops: []Op{last.inv, last.done, reads[0].done}})
		case !maybe:
			failed++
		case n == 0:
			absent++
		case n == 1:
			applied++
		default:
			vs = append(vs, Violation{What: fmt.Sprintf("indeterminate post %s to %s stored %d times", k.id, k.channel, n),
				Ops: []Op{last.inv, last.done, reads[0].done}})
		}
	}
	return verdict("indeterminate", vs, "%d indeterminate posts resolved: %d applied once, %d absent; %d failed posts absent",
		applied+absent, applied, absent, failed)
}
