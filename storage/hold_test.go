package storage_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/storage"
	"github.com/heraldhq/herald/storage/storagetest"
)

// committedHead reads the head seq of channel in what db committed, as a
// stale read does (ViewCommitted).
func committedHead(db *storage.DB, channel string) (uint64, error) {
	var head uint64
	err := db.ViewCommitted(func(r *storage.Reader) error {
		_, hd, _, err := r.Events(channel, 0, 0)
		head = hd
		return err
	})
	return head, err
}

// deferOpts are a replica's options: commits unsynced and held (hold.go).
var deferOpts = storage.Options{DeferSync: true}

// TestHeldEntriesAreRead posts one entry per Apply into a DeferSync file,
// whose commits are held, while readers read concurrently: every read after
// an Apply returned sees that Apply's post, and the applied index of the
// file is the last entry's.
func TestHeldEntriesAreRead(t *testing.T) {
	h := &harness{t: t, db: openDB(t, deferOpts), term: 1}
	h.ok(as("alice", createCmd("c", false)))
	var (
		mu     sync.Mutex
		posted uint64 // the seq of the last post Apply returned for
		wg     sync.WaitGroup
		stop   = make(chan struct{})
		errs   = make(chan error, 4)
	)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				want := posted
				mu.Unlock()
				var head uint64
				err := h.db.View(func(r *storage.Reader) error {
					_, hd, _, err := r.Events("c", 0, 0)
					head = hd
					return err
				})
				if err == nil && head < want {
					err = fmt.Errorf("read head %d after the post of seq %d was applied", head, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range 300 {
		seq := h.post("alice", "c", fmt.Sprint("post ", i))
		mu.Lock()
		posted = seq
		mu.Unlock()
		if i%50 == 0 {
			if index, _, err := h.db.AppliedIndex(); err != nil || index != h.index {
				t.Fatalf("AppliedIndex after Apply of index %d: got %d, %v", h.index, index, err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if evs := h.events("c"); len(evs) != 300 {
		t.Fatalf("got %d events, want 300", len(evs))
	}
}

// TestHeldEntriesAreClosedIn checks that Close commits what is held, so
// that the file reopens clean with every entry, and that a crash (Abandon)
// leaves a file Open refuses rather than one missing held entries.
func TestHeldEntriesAreClosedIn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := storage.Open(path, deferOpts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, term: 1}
	h.ok(as("alice", createCmd("c", false)))
	for i := range 10 {
		h.post("alice", "c", fmt.Sprint("post ", i))
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	h.db = openAt(t, path, deferOpts)
	if got := h.channel("c").GetHeadSeq(); got != 10 {
		t.Fatalf("head seq after reopening: got %d, want 10", got)
	}
	if index, _, err := h.db.AppliedIndex(); err != nil || index != h.index {
		t.Fatalf("applied index after reopening: got %d, %v; want %d", index, err, h.index)
	}

	path2 := filepath.Join(t.TempDir(), "state.db")
	db2, err := storage.Open(path2, deferOpts)
	if err != nil {
		t.Fatal(err)
	}
	h2 := &harness{t: t, db: db2, term: 1}
	h2.ok(as("alice", createCmd("c", false)))
	h2.post("alice", "c", "held")
	if err := db2.Abandon(); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.Open(path2, deferOpts); !errors.Is(err, storage.ErrUnclean) {
		t.Fatalf("Open after a crash with held entries: got %v, want ErrUnclean", err)
	}
}

// TestHeldEntriesNoRoom fills the filesystem under a DeferSync file while
// its commits are held: the commit that finds no room (here a read's) must
// fail with ErrNoSpace and lose nothing Apply returned for. Reads fail
// until there is room (ViewCommitted, for stale reads, reads what was
// committed); the retries on the timer commit what is held once there is
// room, and tell Options.NoRoom; the next Apply applies the held entries again and
// commits at once, so that it reports the lack of room too and can be
// retried; once there is room, every post is there, in order.
func TestHeldEntriesNoRoom(t *testing.T) {
	dir := storagetest.MountTmpfs(t, 2<<20)
	told := make(chan error, 10)
	opts := deferOpts
	opts.NoRoom = func(err error) { told <- err }
	h := &harness{t: t, db: openAt(t, filepath.Join(dir, "state.db"), opts), term: 1}
	h.ok(as("alice", createCmd("c", false)))
	filler := storagetest.Fill(t, dir, 256<<10)
	posts := 0
	var err error
	for ; posts < 200; posts++ {
		// Each post is held; the read commits it, until one has no room.
		h.post("alice", "c", bigText)
		if _, _, err = h.db.AppliedIndex(); err != nil {
			posts++
			break
		}
	}
	t.Logf("read after post %d: %v", posts, err)
	if !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("read after %d posts of %d bytes: got %v, want ErrNoSpace", posts, len(bigText), err)
	}
	if err := h.db.View(func(*storage.Reader) error { return nil }); !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("View while held entries have no room: got %v, want ErrNoSpace", err)
	}
	head, err := committedHead(h.db, "c")
	if err != nil || head != uint64(posts-1) {
		t.Fatalf("ViewCommitted while the last post has no room: head %d, %v; want %d, nil", head, err, posts-1)
	}
	entries := h.entries(as("alice", postCmd("c", "after", "")))
	if _, _, err := h.db.Apply(entries); !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("Apply while held entries have no room: got %v, want ErrNoSpace", err)
	}
	if err := <-told; !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("NoRoom told %v, want ErrNoSpace", err)
	}
	filler.Remove()
	// With nothing more applied or read, the retries commit what is held.
	select {
	case err := <-told:
		if err != nil {
			t.Fatalf("NoRoom told %v after the filler was removed, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held entries were not committed 10s after the filler was removed")
	}
	res, _, err := h.db.Apply(entries)
	if err != nil {
		t.Fatalf("the same Apply with room: got %v", err)
	}
	if got, want := res[0].Message.GetSeq(), uint64(posts+1); got != want {
		t.Errorf("seq of the post applied with room: got %d, want %d", got, want)
	}
	evs := h.events("c")
	if len(evs) != posts+1 {
		t.Fatalf("got %d events, want %d", len(evs), posts+1)
	}
	if index, _, err := h.db.AppliedIndex(); err != nil || index != h.index {
		t.Fatalf("applied index: got %d, %v; want %d", index, err, h.index)
	}
}

// TestHeldEntriesNoRoomClose closes a DeferSync file whose held entries
// have no room: Close drops them and marks the file clean at the applied
// index it committed, and the entries after it, applied again as raft does
// at start, bring back every post once there is room.
func TestHeldEntriesNoRoomClose(t *testing.T) {
	dir := storagetest.MountTmpfs(t, 2<<20)
	path := filepath.Join(dir, "state.db")
	db, err := storage.Open(path, deferOpts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, term: 1}
	h.ok(as("alice", createCmd("c", false)))
	filler := storagetest.Fill(t, dir, 256<<10)
	var log []storage.Entry // every entry applied, as raft's log holds them
	for range 200 {
		entries := h.entries(as("alice", postCmd("c", bigText, "")))
		if _, _, err := h.db.Apply(entries); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		log = append(log, entries...)
		if _, err = h.db.Size(); err != nil {
			break
		}
	}
	if !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("read after %d posts: got %v, want ErrNoSpace", len(log), err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close with held entries that have no room: got %v, want nil", err)
	}
	filler.Remove()
	h.db = openAt(t, path, deferOpts)
	applied, _, err := h.db.AppliedIndex()
	if err != nil || applied >= h.index {
		t.Fatalf("applied index after reopening: got %d, %v; want below %d", applied, err, h.index)
	}
	res, _, err := h.db.Apply(log)
	if err != nil {
		t.Fatalf("Apply of the log again: %v", err)
	}
	for i, r := range res {
		if skipped := log[i].Index <= applied; r.Skipped != skipped {
			t.Errorf("entry %d applied again: skipped %v, want %v (file at %d)", log[i].Index, r.Skipped, skipped, applied)
		}
	}
	if evs := h.events("c"); len(evs) != len(log) {
		t.Fatalf("got %d events, want %d", len(evs), len(log))
	}
}

// TestHeldEntriesCommittedAsFarAsRoom holds 6 large posts (less than the
// bytes that may be held), more than there is room for, and reads: the
// commit finds no room, and the posts are then committed one a
// transaction as far as they fit, so that a stale read (ViewCommitted)
// sees every post there is room for, not only those of the last commit
// that fitted.
func TestHeldEntriesCommittedAsFarAsRoom(t *testing.T) {
	const held = 6
	dir := storagetest.MountTmpfs(t, 2<<20)
	h := &harness{t: t, db: openAt(t, filepath.Join(dir, "state.db"), deferOpts), term: 1}
	h.ok(as("alice", createCmd("c", false)))
	h.post("alice", "c", "small")
	if _, _, err := h.db.AppliedIndex(); err != nil {
		t.Fatal(err)
	}
	filler := storagetest.Fill(t, dir, 128<<10)
	defer filler.Remove()
	for range held {
		h.post("alice", "c", bigText)
	}
	if _, _, err := h.db.AppliedIndex(); !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("read of %d held posts of %d bytes with 128 KiB free: got %v, want ErrNoSpace", held, len(bigText), err)
	}
	head, err := committedHead(h.db, "c")
	t.Logf("committed: head %d of %d", head, held+1)
	if err != nil || head <= 1 || head > held {
		t.Fatalf("ViewCommitted: head %d, %v; want between 2 and %d (the posts that fit)", head, err, held)
	}
}
