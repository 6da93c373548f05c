package storage

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// Held commits (Options.DeferSync only). A DeferSync state file is not what
// makes a write durable, so Apply need not commit each batch: it leaves its
// write transaction open and the next batches apply into it, and one commit
// writes the pages they share once. Results are returned at once; nothing
// waits for the commit. What is applied becomes visible to readers only by
// a commit, so every read (View, AppliedIndex, Snapshot, Size, Digest)
// commits what is held first, and reads never miss an applied entry. A
// held transaction is committed once it holds holdMaxEntries entries or
// holdMaxBytes of commands, holdMaxAge after its first, and by Close. The
// byte bound is also what bounds how far past a full disk a replica can
// apply before Apply reports the lack of room and the FSM waits.
//
// If a commit fails for lack of room (ErrNoSpace), bbolt has rolled the
// transaction back, but the entries earlier Apply calls returned results
// for are already applied as far as the caller knows. They are kept, and
// committed one a transaction as far as there is room, so that what is
// committed is all that fits, as if each batch had been committed on its
// own. The rest are applied again into a new transaction before anything
// else: by the next Apply, which then commits at once so that its caller
// sees the lack of room, by the next read, or by the timer, which retries
// with backoff and tells Options.NoRoom. Until all are committed, View
// fails with the error (ViewCommitted reads what fits). Close drops them:
// the file is a committed prefix of what was applied, at an earlier
// applied index, and the caller applies the entries after it again (raft
// does at start). Any other failure (I/O, a failed commit) is kept and
// returned by every later Apply and read: the file cannot be trusted.
const (
	holdMaxEntries = 512
	holdMaxBytes   = 256 << 10 // of commands: what may be held past a full disk
	holdMaxAge     = time.Second

	// Backoff of the retries of a commit that found no room outside Apply.
	holdRetryMin = 50 * time.Millisecond
	holdRetryMax = 2 * time.Second
)

// holdState is the write transaction Apply left open and what it holds.
// Its mutex is taken inside DB.mu (read-locked, or locked).
type holdState struct {
	mu      sync.Mutex
	tx      *bolt.Tx // nil: none open
	entries []Entry  // applied since the last commit: in tx, or to apply again if tx is nil
	bytes   int      // the size of entries' commands
	timer   *time.Timer
	failed  error // sticky
	// waiting is set while held entries have no room, after Options.NoRoom
	// was told; retry is the current pause between retries.
	waiting bool
	retry   time.Duration
}

// begin returns the open write transaction, or begins one and applies the
// held entries into it again. d.mu is read-locked and d.hold.mu locked.
func (d *DB) begin() (*bolt.Tx, error) {
	h := &d.hold
	if h.failed != nil {
		return nil, h.failed
	}
	if h.tx != nil {
		return h.tx, nil
	}
	tx, err := d.db.Begin(true)
	if err != nil {
		return nil, err
	}
	if err := d.applyAgain(tx, h.entries); err != nil {
		return nil, err
	}
	h.tx = tx
	return tx, nil
}

// applyAgain applies held entries into tx, or rolls tx back and keeps the
// error. d.hold.mu is locked.
func (d *DB) applyAgain(tx *bolt.Tx, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if _, _, err := d.applyIn(tx, entries); err != nil {
		_ = tx.Rollback() // the apply error is the one to report
		d.hold.failed = fmt.Errorf("apply held entries again: %w", err)
		return d.hold.failed
	}
	return nil
}

// commitErr classifies a failed commit of the state file: ErrNoSpace if it
// can be run again once there is room, else the error, kept. d.hold.mu is
// locked.
func (d *DB) commitErr(err error) error {
	if noRoom(err) {
		return fmt.Errorf("%w: %s: %w", ErrNoSpace, d.path, err)
	}
	d.hold.failed = fmt.Errorf("commit state file %s: %w", d.path, err)
	return d.hold.failed
}

// commit commits the open write transaction, if any. On lack of room the
// held entries stay, to be applied again; on any other failure the error is
// kept. d.mu is read-locked and d.hold.mu locked.
func (d *DB) commit() error {
	h := &d.hold
	if h.tx == nil {
		return h.failed
	}
	err := h.tx.Commit()
	h.tx = nil
	if err != nil {
		return d.commitErr(err)
	}
	h.entries, h.bytes = h.entries[:0], 0
	if h.waiting {
		h.waiting = false
		h.retry = 0
		if d.opts.NoRoom != nil {
			d.opts.NoRoom(nil)
		}
	}
	return nil
}

// commitEach commits the held entries one a transaction, after their
// commit together found no room, until one does not fit: the committed
// state then holds every entry there is room for, as if each batch had been
// committed on its own. d.mu is read-locked and d.hold.mu locked; no
// transaction is open.
func (d *DB) commitEach() {
	h := &d.hold
	for len(h.entries) > 0 && h.failed == nil {
		tx, err := d.db.Begin(true)
		if err != nil {
			h.failed = err
			return
		}
		if d.applyAgain(tx, h.entries[:1]) != nil {
			return
		}
		if err := tx.Commit(); err != nil {
			_ = d.commitErr(err) // no room: the rest stays held; else kept
			return
		}
		h.bytes -= entriesSize(h.entries[:1])
		h.entries = h.entries[1:]
	}
}

// entriesSize is the size of the entries' commands, encoded.
func entriesSize(entries []Entry) int {
	n := 0
	for i := range entries {
		n += proto.Size(entries[i].Cmd)
	}
	return n
}

// flush commits what is held, applying it again first if a commit failed
// for lack of room. Every read calls it. d.mu is read-locked.
func (d *DB) flush() error {
	h := &d.hold
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != nil {
		return h.failed
	}
	if len(h.entries) == 0 {
		return nil
	}
	if _, err := d.begin(); err != nil {
		return err
	}
	err := d.commit()
	if errors.Is(err, ErrNoSpace) {
		d.commitEach()
		d.waitForRoom(err)
	}
	return err
}

// waitForRoom retries a commit that found no room (err) with backoff, on
// the timer, until it succeeds or Close; the first time it tells
// Options.NoRoom. d.mu is read-locked and d.hold.mu locked.
func (d *DB) waitForRoom(err error) {
	h := &d.hold
	if len(h.entries) == 0 {
		return // commitEach found room for them all
	}
	if !h.waiting {
		h.waiting = true
		if d.opts.NoRoom != nil {
			d.opts.NoRoom(err)
		}
	}
	h.retry = min(max(2*h.retry, holdRetryMin), holdRetryMax)
	h.arm(d, h.retry)
}

// arm runs flushLater after wait; a later arm replaces an earlier one.
func (h *holdState) arm(d *DB, wait time.Duration) {
	if h.timer == nil {
		h.timer = time.AfterFunc(wait, d.flushLater)
	} else {
		h.timer.Reset(wait)
	}
}

// flushLater commits what is held after holdMaxAge, unless something
// committed it first, or retries a commit that found no room.
func (d *DB) flushLater() {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db != nil {
		_ = d.flush() // a failure stays for the next Apply or read
	}
}

// abandonHeld rolls back what is held, as a crash would lose it. d.mu is
// locked.
func (d *DB) abandonHeld() {
	h := &d.hold
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tx != nil {
		_ = h.tx.Rollback() // nothing to report: it is discarded
		h.tx = nil
	}
	h.entries, h.bytes = nil, 0
	h.waiting, h.retry = false, 0
	if h.timer != nil {
		h.timer.Stop()
	}
}
