package check

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// LinearizeTimeout bounds Linearizable's search per channel.
const LinearizeTimeout = 20 * time.Second

// Linearizable checks, with porcupine, that each channel's posts and
// linearizable reads are linearizable against an append-only log: a post
// of a new client_msg_id appends it and gets the next seq, a post of a
// stored one gets that one's seq and changes nothing, and a read returns
// the whole log. A post that may have applied has no known end (it may
// take effect at any time after it was sent, or never, which is the same
// as at the very end); a post that definitely failed, a read that failed,
// a stale read and a read of more than one page are left out. A search
// that does not finish within LinearizeTimeout is a failure, not a pass.
func Linearizable(h History) Verdict {
	var vs []Violation
	checked, total := 0, 0
	never := int64(len(h)) + 1 // after every record: an end not known
	byChannel := map[string][]porcupine.Operation{}
	for _, op := range postOps(h, never) {
		byChannel[op.Metadata.(Op).Channel] = append(byChannel[op.Metadata.(Op).Channel], op)
	}
	for _, r := range operations(h, Read) {
		if !r.ok() || r.inv.Stale || r.done.Pages > 1 {
			continue
		}
		ids := make([]string, len(r.done.Messages))
		for i, m := range r.done.Messages {
			ids[i] = m.ClientMsgID
		}
		byChannel[r.inv.Channel] = append(byChannel[r.inv.Channel], porcupine.Operation{Input: logInput{read: true},
			Call: int64(r.inv.Index), Output: logOutput{known: true, log: logState(ids)}, Return: int64(r.done.Index), Metadata: r.done})
	}
	for _, ch := range channels(h) {
		ops := byChannel[ch]
		if len(ops) == 0 {
			continue
		}
		checked++
		total += len(ops)
		res, info := porcupine.CheckOperationsVerbose(appendLog, ops, LinearizeTimeout)
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			vs = append(vs, Violation{What: fmt.Sprintf("%s: linearizability of %d operations not decided within %v", ch, len(ops), LinearizeTimeout)})
		default:
			vs = append(vs, Violation{What: fmt.Sprintf("%s: %d operations are not linearizable as an append-only log; the operations after the longest linearizable prefix follow", ch, len(ops)),
				Ops: stuck(ops, info)})
		}
	}
	return verdict("linearizable", vs, "%d operations on %d channels checked with porcupine", total, checked)
}

// postOps are the posts as porcupine operations. The attempts of one
// client_msg_id up to its first acknowledgement are one operation, from
// the first attempt's invoke to that acknowledgement: an earlier attempt
// that may have applied took effect in between, and the acknowledgement
// (deduplicated) gives its seq. Attempts sent after it are operations of
// their own that must return that seq. A post never acknowledged is one
// operation with no known end, unless the drain read its channel: a post
// the first final read holds took effect before that read returned, and
// one it lacks took effect before no read (the log only grows), so it is
// left out. Attempts that definitely failed are left out. So an
// indeterminate attempt does not leave an operation open to the end of
// the history, which the search could not afford many of.
func postOps(h History, never int64) []porcupine.Operation {
	var out []porcupine.Operation
	byPost, keys := attempts(h)
	final := map[string]operation{} // channel → its first final read
	for ch, reads := range finals(h) {
		final[ch] = reads[0]
	}
	for _, k := range keys {
		var open *porcupine.Operation // the attempts so far, unacknowledged
		for _, a := range byPost[k] {
			if a.done.Type == Fail {
				continue
			}
			meta := a.inv
			if a.done.Type != "" {
				meta = a.done
			}
			if open == nil {
				open = &porcupine.Operation{Input: logInput{id: a.inv.ClientMsgID}, Call: int64(a.inv.Index),
					Output: logOutput{}, Return: never, Metadata: meta}
			}
			if a.ok() {
				open.Output, open.Return, open.Metadata = logOutput{known: true, seq: a.done.Seq}, int64(a.done.Index), a.done
				out = append(out, *open)
				open = nil
			}
		}
		if open == nil {
			continue
		}
		if f, ok := final[k.channel]; ok {
			if len(stored(f.done.Messages)[k.id]) == 0 {
				continue // never took effect before any read
			}
			open.Return = int64(f.done.Index)
		}
		out = append(out, *open)
	}
	return out
}

// stuck returns the operations that the longest partial linearization
// could not place, earliest call first, at most 5.
func stuck(ops []porcupine.Operation, info porcupine.LinearizationInfo) []Op {
	var longest []int
	for _, part := range info.PartialLinearizations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	placed := map[int]bool{}
	for _, i := range longest {
		placed[i] = true
	}
	var rest []porcupine.Operation
	for i, op := range ops {
		if !placed[i] {
			rest = append(rest, op)
		}
	}
	slices.SortFunc(rest, func(a, b porcupine.Operation) int { return int(a.Call - b.Call) })
	var out []Op
	for _, op := range rest[:min(len(rest), 5)] {
		out = append(out, op.Metadata.(Op))
	}
	return out
}

// logInput is a post of id, or a read.
type logInput struct {
	read bool
	id   string
}

// logOutput is what a post or read returned; known is false for a post
// that may have applied.
type logOutput struct {
	known bool
	seq   uint64
	log   string
}

// logState is the channel's log: each client_msg_id followed by a
// newline, in seq order. Strings are immutable and comparable, as
// porcupine needs.
func logState(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return strings.Join(ids, "\n") + "\n"
}

// seqOf returns the seq of id in log, 0 if it is not there.
func seqOf(log, id string) uint64 {
	i := strings.Index("\n"+log, "\n"+id+"\n")
	if i < 0 {
		return 0
	}
	return uint64(strings.Count(log[:i], "\n")) + 1
}

var appendLog = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		log, in, out := state.(string), input.(logInput), output.(logOutput)
		if in.read {
			return out.log == log, log
		}
		if seq := seqOf(log, in.id); seq != 0 {
			return !out.known || out.seq == seq, log
		}
		next := log + in.id + "\n"
		return !out.known || out.seq == uint64(strings.Count(log, "\n"))+1, next
	},
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(logInput), output.(logOutput)
		if in.read {
			return fmt.Sprintf("read → %d messages", strings.Count(out.log, "\n"))
		}
		if !out.known {
			return "post " + in.id + " → ?"
		}
		return fmt.Sprintf("post %s → seq %d", in.id, out.seq)
	},
}
