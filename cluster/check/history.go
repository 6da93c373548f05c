package check

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Kind is what an operation does.
type Kind string

// Operation kinds.
const (
	// Post is one attempt to post a message with a client_msg_id.
	Post Kind = "post"
	// Read is one read of a channel's whole history.
	Read Kind = "read"
	// Fault is a fault starting or healing; it is not checked, but it
	// places the faults among the operations.
	Fault Kind = "fault"
)

// Type is a record's place in an operation's life.
type Type string

// Record types. An operation is an Invoke followed by exactly one of the
// others, both with the same Op.ID; a fault record is Info.
const (
	// Invoke is the operation being sent.
	Invoke Type = "invoke"
	// OK is the operation acknowledged: a post applied with Seq, a read
	// answered with Messages.
	OK Type = "ok"
	// Fail is the operation definitely not applied.
	Fail Type = "fail"
	// Info is the operation's outcome unknown: a post that may have
	// applied (indeterminate, timed out, the node gone), a read that
	// failed.
	Info Type = "info"
)

// Message is one message a read returned.
type Message struct {
	Seq         uint64 `json:"seq"`
	ClientMsgID string `json:"client_msg_id"`
}

// Op is one record of a history.
type Op struct {
	// Index is the record's position in the history, from 0; Recorder
	// assigns it, so that it orders records in real time.
	Index int `json:"index"`
	// ID names the operation: its invoke and its completion share it.
	ID      int    `json:"id"`
	Process string `json:"process"` // the client, or "nemesis" for faults
	Kind    Kind   `json:"kind"`
	Type    Type   `json:"type"`
	Channel string `json:"channel,omitempty"`
	Node    string `json:"node,omitempty"` // the node the client called
	// ClientMsgID and Seq are a post's; Seq is set on OK.
	ClientMsgID string `json:"client_msg_id,omitempty"`
	Seq         uint64 `json:"seq,omitempty"`
	// Stale is a read served by any replica; Final a read of the drain.
	Stale bool `json:"stale,omitempty"`
	Final bool `json:"final,omitempty"`
	// Messages are what an OK read returned, oldest first, in Pages
	// pages (each its own request, so a read of more than one is not
	// atomic).
	Messages []Message `json:"messages,omitempty"`
	Pages    int       `json:"pages,omitempty"`
	// Error is why an operation did not succeed; Fault describes a fault.
	Error string    `json:"error,omitempty"`
	Fault string    `json:"fault,omitempty"`
	Time  time.Time `json:"time"`
}

func (o Op) String() string {
	s := fmt.Sprintf("#%d %s %s %s", o.Index, o.Process, o.Kind, o.Type)
	if o.Channel != "" {
		s += " " + o.Channel
	}
	if o.ClientMsgID != "" {
		s += " " + o.ClientMsgID
	}
	if o.Seq != 0 {
		s += fmt.Sprintf(" seq=%d", o.Seq)
	}
	if o.Node != "" {
		s += " via " + o.Node
	}
	if o.Stale {
		s += " stale"
	}
	if o.Final {
		s += " final"
	}
	if o.Type == OK && o.Kind == Read {
		s += fmt.Sprintf(" (%d messages)", len(o.Messages))
	}
	if o.Error != "" {
		s += ": " + o.Error
	}
	if o.Fault != "" {
		s += " " + o.Fault
	}
	return s
}

// History is a list of records in the order they happened.
type History []Op

// Recorder builds a History as operations happen. It is safe for
// concurrent use.
type Recorder struct {
	mu     sync.Mutex // guards following
	ops    History
	nextID int
}

// Invoke records op (Kind, Process, Channel, Node, ClientMsgID, Stale,
// Final) as sent and returns its ID, which Complete takes.
func (r *Recorder) Invoke(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.ID, op.Type = r.nextID, Invoke
	r.nextID++
	r.appendLocked(op)
	return op.ID
}

// Complete records the outcome of the operation invoked as id: typ is OK,
// Fail or Info; done carries the outcome's fields (Seq, Messages, Error).
func (r *Recorder) Complete(id int, typ Type, done Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var inv Op
	for i := len(r.ops) - 1; i >= 0; i-- {
		if r.ops[i].ID == id && r.ops[i].Type == Invoke {
			inv = r.ops[i]
			break
		}
	}
	inv.Type, inv.Seq, inv.Messages, inv.Pages, inv.Error = typ, done.Seq, done.Messages, done.Pages, done.Error
	r.appendLocked(inv)
}

// Note records a fault: what happened, in words.
func (r *Recorder) Note(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op := Op{ID: r.nextID, Process: "nemesis", Kind: Fault, Type: Info, Fault: what}
	r.nextID++
	r.appendLocked(op)
}

func (r *Recorder) appendLocked(op Op) {
	op.Index = len(r.ops)
	op.Time = time.Now()
	r.ops = append(r.ops, op)
}

// History returns a copy of the records so far.
func (r *Recorder) History() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(History(nil), r.ops...)
}

// WriteJSONL writes h to w, one record a line.
func WriteJSONL(w io.Writer, h History) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, op := range h {
		if err := enc.Encode(op); err != nil {
			return fmt.Errorf("encode record %d: %w", op.Index, err)
		}
	}
	return bw.Flush()
}

// ReadJSONL reads a history that WriteJSONL wrote.
func ReadJSONL(r io.Reader) (History, error) {
	var h History
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("history line %d: %w", line, err)
		}
		h = append(h, op)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return h, nil
}
