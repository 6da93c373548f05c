package storage_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage"
)

// durableHarness is a harness on a DB with fsync on, for tests where the
// file on disk is what is checked.
func durableHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, db: openDB(t, storage.Options{}), term: 1}
}

func TestSnapshotRestore(t *testing.T) {
	src := durableHarness(t)
	seedState(src)
	src.term = 7
	src.ok(as("carol", joinCmd("general")))
	srcIndex, srcSum := src.digest()

	data := snapshotBytes(t, src.db)
	idx, term, size, err := storage.ReadSnapshotHeader(bytes.NewReader(data))
	if err != nil || idx != srcIndex || term != 7 || size != uint64(len(data)-64) {
		t.Fatalf("ReadSnapshotHeader = %d, %d, %d, %v; want %d, 7, %d, nil (header and checksum are 32 bytes each)", idx, term, size, err, srcIndex, len(data)-64)
	}

	dst := durableHarness(t)
	replaced, err := dst.db.Restore(bytes.NewReader(data))
	if err != nil || !replaced {
		t.Fatalf("Restore into a fresh DB = %v, %v; want true, nil", replaced, err)
	}
	dstIndex, dstSum := dst.digest()
	if dstIndex != srcIndex || dstSum != srcSum {
		t.Errorf("restored digest %d/%x, want the source's %d/%x", dstIndex, dstSum, srcIndex, srcSum)
	}
	if i, tm, err := dst.db.AppliedIndex(); err != nil || i != srcIndex || tm != 7 {
		t.Errorf("restored AppliedIndex() = %d, %d, %v; want %d, 7, nil", i, tm, err, srcIndex)
	}
	if leftovers, _ := filepath.Glob(dst.db.Path() + ".*"); len(leftovers) != 0 {
		t.Errorf("files left next to the state file after Restore: %v", leftovers)
	}

	// The restored DB serves reads.
	for _, h := range []*harness{src, dst} {
		if got := h.message("general", 2, 0).GetText(); got != "hello, edited" {
			t.Errorf("message 2 text = %q, want %q", got, "hello, edited")
		}
		if got := kinds(h.events("general")); len(got) != 9 {
			t.Errorf("events of general = %v, want 9", got)
		}
	}

	// Apply continues from the snapshot's index: redelivered entries are
	// skipped, later ones apply, and both replicas stay identical.
	dst.index, dst.term = src.index-2, 7
	res, _ := dst.batch(as("carol", joinCmd("general")), as("carol", joinCmd("general")))
	if !res[0].Skipped || !res[1].Skipped {
		t.Errorf("redelivered entries after restore: %+v, want skipped", res)
	}
	dst.index = src.index
	for _, h := range []*harness{src, dst} {
		// A new post, and a retry of a post from before the snapshot, which
		// is still deduplicated.
		r1 := h.ok(as("carol", postCmd("general", "after restore", "k-1")))
		r2 := h.ok(as("alice", postCmd("general", "hello", "cid-1")))
		if r1.Message.GetSeq() != 10 || !r2.Duplicate || r2.Message.GetSeq() != 2 {
			t.Errorf("after restore: post seq %d, retry duplicate %v seq %d; want 10, true, 2",
				r1.Message.GetSeq(), r2.Duplicate, r2.Message.GetSeq())
		}
	}
	i1, d1 := src.digest()
	i2, d2 := dst.digest()
	if i1 != i2 || d1 != d2 {
		t.Errorf("after the same entries: restored %d/%x, source %d/%x; want equal", i2, d2, i1, d1)
	}
}

func TestRestoreReplacesOlderState(t *testing.T) {
	src := newHarness(t)
	seedState(src)
	data := snapshotBytes(t, src.db)
	_, want := src.digest()

	dst := durableHarness(t)
	dst.ok(as("zed", createCmd("only-here", false)))
	dst.post("zed", "only-here", "gone after restore")
	replaced, err := dst.db.Restore(bytes.NewReader(data))
	if err != nil || !replaced {
		t.Fatalf("Restore over older state = %v, %v; want true, nil", replaced, err)
	}
	if _, got := dst.digest(); got != want {
		t.Errorf("digest after Restore over older state differs from the snapshot's")
	}
	dst.view(func(r *storage.Reader) error {
		_, _, err := r.Channel(anyone, "only-here")
		checkDomainErr(t, "Channel(only-here) after restore", err, storage.ErrNotFound)
		return nil
	})
}

// TestRestoreWhileSnapshotOpen restores while a snapshot of the old state
// is still open, as raft's snapshot goroutine holds one while it waits for
// the main loop, which waits for the restore (seen as a hang of
// cluster/partition's TestJoinNewReplica). Restore must not wait for the
// snapshot; the snapshot still reads the old state, and Close waits for
// it to be released.
func TestRestoreWhileSnapshotOpen(t *testing.T) {
	src := newHarness(t)
	seedState(src)
	data := snapshotBytes(t, src.db)
	_, want := src.digest()

	dst := durableHarness(t)
	dst.ok(as("zed", createCmd("only-here", false)))
	old, err := dst.db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := dst.db.Restore(bytes.NewReader(data))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Restore with a snapshot open: %v", err)
		}
	case <-time.After(10 * time.Second):
		old.Release()
		t.Fatal("Restore still waiting for the open snapshot after 10s, want it to go ahead")
	}
	if _, got := dst.digest(); got != want {
		t.Errorf("digest after the restore differs from the snapshot's")
	}
	var b bytes.Buffer
	if _, err := old.WriteTo(&b); err != nil {
		t.Errorf("the old snapshot after the restore: %v", err)
	}
	old.Release()
	closed := make(chan error, 1)
	go func() { closed <- dst.db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close after the old snapshot was released: still waiting after 10s")
	}
}

func TestRestoreIsNoOpWhenCaughtUp(t *testing.T) {
	src := newHarness(t)
	seedState(src)
	data := snapshotBytes(t, src.db)
	snapIndex, _ := src.digest()

	for _, tt := range []struct {
		name  string
		extra int // entries applied past the snapshot's index
	}{
		{"at the snapshot's index", 0},
		{"past the snapshot's index", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := newHarness(t)
			seedState(dst)
			for range tt.extra {
				dst.ok(as("bob", postCmd("general", "newer", "")))
				dst.skip()
			}
			wantIndex, wantSum := dst.digest()
			r := bytes.NewReader(data)
			replaced, err := dst.db.Restore(r)
			if err != nil || replaced {
				t.Fatalf("Restore(index %d) at index %d = %v, %v; want false, nil", snapIndex, wantIndex, replaced, err)
			}
			if r.Len() != 0 {
				t.Errorf("Restore left %d bytes of the stream unread, want it drained", r.Len())
			}
			if gotIndex, gotSum := dst.digest(); gotIndex != wantIndex || gotSum != wantSum {
				t.Errorf("no-op Restore changed the state: %d/%x, want %d/%x", gotIndex, gotSum, wantIndex, wantSum)
			}
		})
	}
}

func TestRestoreBadSnapshot(t *testing.T) {
	src := newHarness(t)
	seedState(src)
	good := snapshotBytes(t, src.db)
	_, srcSum := src.digest()

	withHeader := func(index, size uint64, body []byte) []byte {
		b := append([]byte("HRLDSNP1"), binary.BigEndian.AppendUint64(nil, index)...)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, size)
		return append(b, body...)
	}
	body := good[32:]
	garbage := bytes.Repeat([]byte{0xA5}, len(body))
	tests := []struct {
		name   string
		stream []byte
	}{
		{"empty", nil},
		{"half a header", good[:16]},
		{"header only", good[:32]},
		{"truncated by one byte", good[:len(good)-1]},
		{"truncated in half", good[:len(good)/2]},
		{"wrong magic", append([]byte("HRLDSNP2"), good[8:]...)},
		{"not a snapshot", []byte("this is not a snapshot at all, not even close")},
		{"size larger than the body", withHeader(src.index, uint64(len(body))+4096, body)},
		{"garbage body", withHeader(src.index, uint64(len(garbage)), garbage)},
		{"header index does not match the file", withHeader(src.index+5, uint64(len(body)), body)},
		{"an empty file", withHeader(src.index, 0, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newHarness(t)
			dst.ok(as("alice", createCmd("mine", false)))
			m := dst.post("alice", "mine", "keep me")
			wantIndex, wantSum := dst.digest()

			replaced, err := dst.db.Restore(bytes.NewReader(tt.stream))
			if !errors.Is(err, storage.ErrBadSnapshot) || replaced {
				t.Fatalf("Restore(%s) = %v, %v; want false, %v", tt.name, replaced, err, storage.ErrBadSnapshot)
			}
			if gotIndex, gotSum := dst.digest(); gotIndex != wantIndex || gotSum != wantSum {
				t.Errorf("Restore(%s) changed the state", tt.name)
			}
			if leftovers, _ := filepath.Glob(dst.db.Path() + ".*"); len(leftovers) != 0 {
				t.Errorf("Restore(%s) left files next to the state file: %v", tt.name, leftovers)
			}
			// The old state is intact and usable.
			if got := dst.message("mine", m, 0).GetText(); got != "keep me" {
				t.Errorf("after failed Restore: message text = %q, want %q", got, "keep me")
			}
			if seq := dst.post("alice", "mine", "still writable"); seq != m+1 {
				t.Errorf("after failed Restore: post seq = %d, want %d", seq, m+1)
			}
			// And a good snapshot still restores.
			if replaced, err := dst.db.Restore(bytes.NewReader(good)); err != nil || !replaced {
				t.Fatalf("Restore(good) after Restore(%s) = %v, %v; want true, nil", tt.name, replaced, err)
			}
			if _, got := dst.digest(); got != srcSum {
				t.Errorf("digest after Restore(good) differs from the source's")
			}
		})
	}
}

// TestSnapshotIsConsistent checks that a snapshot reflects the state when it
// started, while writes applied after it are visible to readers.
func TestSnapshotIsConsistent(t *testing.T) {
	h := newHarness(t)
	seedState(h)
	wantIndex, wantSum := h.digest()

	snap, err := h.db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			snap.Release()
		}
	}()
	if idx, term := snap.Index(); idx != wantIndex || term != h.term {
		t.Errorf("Snapshot.Index() = %d, %d; want %d, %d", idx, term, wantIndex, h.term)
	}

	// Writes after the snapshot, enough to touch many pages.
	for i := range 200 {
		h.ok(as("alice", postCmd("general", fmt.Sprintf("after snapshot %d %s", i, bytes.Repeat([]byte("x"), 200)), "")))
	}
	h.ok(as("alice", deleteCmd("general", 2)))
	if got := h.message("general", 2, 0); !got.GetDeleted() {
		t.Errorf("live read after the snapshot: message 2 = %v, want the delete visible", got)
	}
	if idx, _ := h.digest(); idx != h.index {
		t.Errorf("live applied index = %d, want %d", idx, h.index)
	}

	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v; want %d bytes, nil", n, err, buf.Len())
	}
	snap.Release()
	released = true

	dst := newHarness(t)
	if replaced, err := dst.db.Restore(&buf); err != nil || !replaced {
		t.Fatalf("Restore = %v, %v", replaced, err)
	}
	if gotIndex, gotSum := dst.digest(); gotIndex != wantIndex || gotSum != wantSum {
		t.Errorf("snapshot taken before later writes restored to %d/%x, want the state at its start %d/%x",
			gotIndex, gotSum, wantIndex, wantSum)
	}
	if got := dst.message("general", 2, 0); got.GetDeleted() {
		t.Errorf("restored message 2 = %v, want it not deleted (the delete came after the snapshot)", got)
	}
}

func TestSnapshotWriteToError(t *testing.T) {
	h := newHarness(t)
	seedState(h)
	snap, err := h.db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	for _, limit := range []int{0, 10, 32, 5000} {
		w := &failingWriter{left: limit}
		if _, err := snap.WriteTo(w); err == nil {
			t.Errorf("WriteTo a writer failing after %d bytes = nil error, want an error", limit)
		}
	}
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, io.ErrShortWrite
	}
	w.left -= len(p)
	return len(p), nil
}

// TestReopen checks that Close and Open keep everything, with fsync on.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := storage.Open(path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, term: 3}
	seedState(h)
	wantIndex, wantSum := h.digest()
	wantHistory, err := historyOf(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	db2 := openAt(t, path, storage.Options{})
	if db2.Path() != path {
		t.Errorf("Path() = %q, want %q", db2.Path(), path)
	}
	if gotIndex, gotSum := digestOf(t, db2); gotIndex != wantIndex || gotSum != wantSum {
		t.Errorf("after reopen: digest %d/%x, want %d/%x", gotIndex, gotSum, wantIndex, wantSum)
	}
	if i, term, err := db2.AppliedIndex(); err != nil || i != wantIndex || term != 3 {
		t.Errorf("after reopen: AppliedIndex() = %d, %d, %v; want %d, 3, nil", i, term, err, wantIndex)
	}
	gotHistory, err := historyOf(db2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(gotHistory, wantHistory, func(a, b *heraldv1.Message) bool { return proto.Equal(a, b) }) {
		t.Errorf("after reopen: history = %v, want %v", gotHistory, wantHistory)
	}
	// Apply continues after the reopened index.
	h.db = db2
	if seq := h.post("bob", "general", "after reopen"); seq != 9 {
		t.Errorf("post after reopen: seq = %d, want 9", seq)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	t.Run("directory missing", func(t *testing.T) {
		if db, err := storage.Open(filepath.Join(dir, "no", "such", "state.db"), fastOpts); err == nil {
			db.Close()
			t.Errorf("Open in a missing directory = nil error, want an error")
		}
	})
	t.Run("not a bbolt file", func(t *testing.T) {
		path := filepath.Join(dir, "junk.db")
		if err := os.WriteFile(path, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := storage.Open(path, fastOpts); err == nil {
			db.Close()
			t.Errorf("Open(junk) = nil error, want an error")
		}
	})
	t.Run("locked", func(t *testing.T) {
		path := filepath.Join(dir, "locked.db")
		openAt(t, path, fastOpts)
		if db, err := storage.Open(path, fastOpts); err == nil {
			db.Close()
			t.Errorf("second Open of a file in use = nil error, want an error")
		}
	})
}

func historyOf(db *storage.DB) ([]*heraldv1.Message, error) {
	var msgs []*heraldv1.Message
	err := db.View(func(r *storage.Reader) error {
		resp, err := r.History(storage.Caller{User: "root", Admin: true},
			&heraldv1.GetHistoryRequest{ChannelId: "general", Limit: storage.MaxPageSize})
		msgs = resp.GetMessages()
		return err
	})
	return msgs, err
}

// TestConcurrentReadsDuringApply runs View, Digest and Snapshot calls on
// other goroutines while Apply runs; with -race it also checks that they
// share no unsynchronized memory. Each reader checks what one read
// transaction must see: a gap-free log ending at the channel's head, and a
// head that never moves backwards.
func TestConcurrentReadsDuringApply(t *testing.T) {
	h := newHarness(t)
	h.ok(as("alice", createCmd("general", false)))
	batches := 150
	if testing.Short() {
		batches = 60
	}

	stop := make(chan struct{})
	errs := make(chan error, 16)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var lastHead uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := h.db.View(func(r *storage.Reader) error {
					ch, _, err := r.Channel(anyone, "general")
					if err != nil {
						return err
					}
					head := ch.GetHeadSeq()
					if head < lastHead {
						return fmt.Errorf("head went from %d back to %d", lastHead, head)
					}
					lastHead = head
					evs, evHead, _, err := r.Events("general", 0, 1<<30)
					if err != nil {
						return err
					}
					if evHead != head || uint64(len(evs)) != head {
						return fmt.Errorf("read %d events with head %d in a transaction where the channel's head is %d", len(evs), evHead, head)
					}
					resp, err := r.History(anyone, &heraldv1.GetHistoryRequest{ChannelId: "general", Limit: 50})
					if err != nil {
						return err
					}
					for i := 1; i < len(resp.GetMessages()); i++ {
						if resp.GetMessages()[i].GetSeq() >= resp.GetMessages()[i-1].GetSeq() {
							return fmt.Errorf("history out of order: %v", seqsOf(resp.GetMessages()))
						}
					}
					return nil
				})
				if err != nil {
					report(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := h.db.Digest(); err != nil {
				report(err)
				return
			}
			snap, err := h.db.Snapshot()
			if err != nil {
				report(err)
				return
			}
			idx, _ := snap.Index()
			n, err := snap.WriteTo(io.Discard)
			snap.Release()
			if err != nil || n < 32 {
				report(fmt.Errorf("snapshot at %d: %d bytes, %v", idx, n, err))
				return
			}
		}
	})

	for i := range batches {
		res, _ := h.batch(
			as("alice", postCmd("general", fmt.Sprintf("post %d", i), fmt.Sprintf("p-%d", i))),
			as(fmt.Sprintf("u%d", i), joinCmd("general")),
			as("alice", reactCmd("general", uint64(3*i+1), "ok")),
		)
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("batch %d: %v", i, r.Err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := h.channel("general").GetHeadSeq(); got != uint64(3*batches) {
		t.Errorf("head_seq = %d, want %d", got, 3*batches)
	}
}

// restoreChildEnv makes TestRestoreCorruptSnapshot run as a child process
// that restores every snapshot file in the directory it names.
const restoreChildEnv = "HERALD_STORAGE_RESTORE_CHILD"

// TestRestoreCorruptSnapshot corrupts one page of a snapshot's body at a
// time, keeping its header and meta pages valid, and restores each in a
// child process (bbolt panics on a goroutine of its own when it opens a
// corrupted file, which would take the test binary down). The trailing
// checksum must make Restore refuse every one with ErrBadSnapshot before
// bbolt opens the file.
func TestRestoreCorruptSnapshot(t *testing.T) {
	if dir := os.Getenv(restoreChildEnv); dir != "" {
		restoreChild(dir)
		return
	}
	src := newHarness(t)
	seedState(src)
	for i := range 50 {
		src.ok(as("alice", postCmd("general", fmt.Sprintf("filler %d %s", i, strings.Repeat("y", 300)), "")))
	}
	good := snapshotBytes(t, src.db)
	const page = 4096
	dir := t.TempDir()
	var names []string
	for off := 32 + 2*page; off < len(good); off += page {
		bad := bytes.Clone(good)
		for i := off + 16; i < off+page && i < len(bad); i += 7 {
			bad[i] ^= 0x5a
		}
		name := fmt.Sprintf("snap-%07d", off)
		if err := os.WriteFile(filepath.Join(dir, name), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestoreCorruptSnapshot$", "-test.count=1")
	cmd.Env = append(os.Environ(), restoreChildEnv+"="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restoring corrupted snapshots crashed (%v)%s; outcomes before the crash:\n%s", err, panicSite(err), out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, outcome, _ := strings.Cut(line, " ")
		got[name] = outcome
	}
	for _, name := range names {
		if got[name] != "bad-snapshot" {
			t.Errorf("Restore(%s, a page corrupted): got %q, want %v", name, got[name], storage.ErrBadSnapshot)
		}
	}
}

// panicSite returns the panic or fatal error message and the first frame of
// package storage in a crashed child's stderr.
func panicSite(err error) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return ""
	}
	var msg, frame string
	for _, line := range strings.Split(string(ee.Stderr), "\n") {
		for _, p := range []string{"panic: ", "fatal error: "} {
			if i := strings.Index(line, p); msg == "" && i >= 0 {
				msg = line[i:]
			}
		}
		if frame == "" && strings.Contains(line, "herald/storage.") && !strings.Contains(line, "_test") {
			frame, _, _ = strings.Cut(strings.TrimSpace(line), "(")
		}
	}
	return fmt.Sprintf(": %s in %s", msg, frame)
}

// restoreChild restores each snapshot file in dir into a fresh DB next to
// it, prints "name outcome" per file and exits.
func restoreChild(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "snap-") || strings.Contains(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		db, err := storage.Open(path+".db", fastOpts)
		if err != nil {
			panic(err)
		}
		f, err := os.Open(path)
		if err != nil {
			panic(err)
		}
		replaced, err := db.Restore(f)
		f.Close()
		switch {
		case errors.Is(err, storage.ErrBadSnapshot):
			fmt.Println(e.Name(), "bad-snapshot")
		case err != nil:
			fmt.Println(e.Name(), "error:", err)
		default:
			fmt.Println(e.Name(), "restored:", replaced)
		}
		db.Close()
	}
	os.Exit(0)
}

func TestRebaseSnapshot(t *testing.T) {
	src := durableHarness(t)
	seedState(src)
	data := snapshotBytes(t, src.db)
	index, _, _, err := storage.ReadSnapshotHeader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		want uint64
	}{
		{"raised", index + 100},
		{"kept", index},
		{"lowered", index - 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := storage.RebaseSnapshot(bytes.NewReader(data), &out, tt.want); err != nil {
				t.Fatalf("RebaseSnapshot(%d): %v", tt.want, err)
			}
			if v, _, err := storage.VerifySnapshot(bytes.NewReader(out.Bytes())); err != nil || v != tt.want {
				t.Fatalf("VerifySnapshot(rebased) = %d, %v; want %d, nil", v, err, tt.want)
			}
			dst := durableHarness(t)
			if replaced, err := dst.db.Restore(bytes.NewReader(out.Bytes())); err != nil || !replaced {
				t.Fatalf("Restore(rebased) = %v, %v; want true, nil", replaced, err)
			}
			if got, _, _ := dst.db.AppliedIndex(); got != tt.want {
				t.Errorf("applied index after restore: got %d, want %d", got, tt.want)
			}
			wantHistory, _ := historyOf(src.db)
			gotHistory, _ := historyOf(dst.db)
			if len(gotHistory) != len(wantHistory) {
				t.Errorf("history after restore: got %d messages, want %d", len(gotHistory), len(wantHistory))
			}
		})
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	if _, err := storage.RebaseSnapshot(bytes.NewReader(bad), io.Discard, 1); !errors.Is(err, storage.ErrBadSnapshot) {
		t.Errorf("RebaseSnapshot(corrupted): got %v, want ErrBadSnapshot", err)
	}
}

// TestSaveSnapshot checks the copy SaveSnapshot makes: the same bytes as
// a snapshot written directly, next to the state file, holding nothing
// open in the state file (Close and Apply go on while it is read), gone
// after its Close, and removed at Open if a crash left it behind.
func TestSaveSnapshot(t *testing.T) {
	h := durableHarness(t)
	seedState(h)
	want := snapshotBytes(t, h.db)
	f, err := h.db.SaveSnapshot()
	if err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	if dir := filepath.Dir(f.Name()); dir != filepath.Dir(h.db.Path()) {
		t.Errorf("snapshot copy in %s, want next to the state file in %s", dir, filepath.Dir(h.db.Path()))
	}
	wantIndex, _ := h.digest()
	if index, _ := f.Index(); index != wantIndex {
		t.Errorf("Index: got %d, want %d", index, wantIndex)
	}
	// While the copy is open and unread, the state file takes writes.
	h.ok(as("carol", joinCmd("general")))
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("copy: got %d bytes, %v; want the %d bytes of the snapshot", len(got), err, len(want))
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy after Close: stat got %v, want it removed", err)
	}

	// A copy that a crash left behind is removed at the next Open, even
	// while another copy is open: the DB's Close does not wait for it.
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := storage.Open(path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	left, err := db.SaveSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer left.File.Close()
	if err := db.Close(); err != nil {
		t.Fatalf("Close with a snapshot copy open: %v", err)
	}
	openAt(t, path, storage.Options{})
	if _, err := os.Stat(left.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("copy left before Open: stat got %v, want it removed", err)
	}
}
