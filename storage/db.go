package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/heraldhq/herald/storage/boltfile"
)

var (
	bucketMeta     = []byte("meta")
	bucketChannels = []byte("channels")
	bucketMembers  = []byte("members")
	bucketEvents   = []byte("events")
	bucketMessages = []byte("messages")
	bucketRoots    = []byte("roots")
	bucketThreads  = []byte("threads")
	bucketDedup    = []byte("dedup")

	allBuckets = [][]byte{bucketMeta, bucketChannels, bucketMembers, bucketEvents,
		bucketMessages, bucketRoots, bucketThreads, bucketDedup}

	keyApplied = []byte("applied")
)

// Options tunes the bbolt file. The zero value is the production default.
type Options struct {
	// MaxSize caps the file size in bytes; writes past it fail. 0 = 64 GiB.
	MaxSize int
	// InitialMmapSize is the initial read mapping, so that long read
	// transactions (snapshots) rarely block a writer that must grow the map.
	// 0 = 1 GiB (address space only; the file grows lazily).
	InitialMmapSize int
	// NoSync turns fsync off. Only for tests that do not crash; an
	// acknowledged write is not durable with it.
	NoSync bool
	// DeferSync leaves commits unsynced; Close syncs the file and marks it
	// clean, and Open refuses a file without the mark (ErrUnclean). For a
	// state the caller can rebuild from what is durable elsewhere (a
	// replica's last snapshot and Raft log).
	DeferSync bool
	// NoRoom, if set, is told (DeferSync only) when entries Apply returned
	// for and held (hold.go) find no room when they are committed outside
	// Apply, by a read or by the timer, which then retries them with
	// backoff; and told nil once they are committed. It must not call the
	// DB.
	NoRoom func(err error)
	// UnsafeSkipDedup is a planted defect, for herald torture's canary
	// only: a post's client_msg_id is not looked up, so a retry is
	// stored again.
	UnsafeSkipDedup bool
}

func (o Options) bolt() *bolt.Options {
	if o.MaxSize == 0 {
		o.MaxSize = 64 << 30
	}
	if o.InitialMmapSize == 0 {
		o.InitialMmapSize = 1 << 30
	}
	return &bolt.Options{
		Timeout:         time.Second,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		InitialMmapSize: o.InitialMmapSize,
		MaxSize:         o.MaxSize,
		NoSync:          o.NoSync || o.DeferSync,
	}
}

// DB is the bbolt state of one partition replica: channels, members, event
// logs, the message view, the dedup table and the last applied Raft index.
//
// Apply and Restore must be called from one goroutine (the Raft FSM
// goroutine); View, Snapshot and Digest may be called concurrently with them
// and with each other. Close is idempotent.
type DB struct {
	path string
	opts Options

	mu sync.RWMutex // guards following; Restore holds it to swap the file
	db *bolt.DB

	// retired waits for handles a Restore replaced, closed as their last
	// read transactions end.
	retired sync.WaitGroup

	hold holdState // the write transaction Apply left open (hold.go)
}

// retire closes a replaced handle once its read transactions have ended
// (bolt's Close waits for them). d.mu must be held.
func (d *DB) retire(old *bolt.DB) {
	d.retired.Go(func() { _ = old.Close() }) // a read-only past: nothing to report
}

// Open opens (or creates) the state file at path, and removes the
// temporary snapshot copies (SaveSnapshot) a crashed process left.
func Open(path string, opts Options) (*DB, error) {
	if opts.DeferSync {
		if err := checkClean(path); err != nil {
			return nil, err
		}
	}
	bdb, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	removeSnapshotCopies(path)
	return &DB{path: path, opts: opts, db: bdb}, nil
}

func openBolt(path string, opts Options) (*bolt.DB, error) {
	// A file cut short while bbolt created it held nothing: made again.
	if _, err := boltfile.CheckTorn(path); err != nil {
		return nil, fmt.Errorf("open state file: %w", err)
	}
	bdb, err := bolt.Open(path, 0o600, opts.bolt())
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open state file %q: locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %q: %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = bdb.Close() // best effort: the create error is the one to report
		return nil, fmt.Errorf("init state file %q: %w", path, err)
	}
	return bdb, nil
}

// Path returns the state file's path.
func (d *DB) Path() string { return d.path }

// Close closes the file. It waits for open read transactions (snapshots in
// progress) to end. With DeferSync it commits what is held (or drops it, if
// there is no room: the file then ends at an earlier applied index), syncs
// the file and then marks it clean.
func (d *DB) Close() error {
	d.mu.Lock()
	var err error
	closed := d.db != nil
	if closed {
		err = d.flush()
		if errors.Is(err, ErrNoSpace) {
			// What is held is dropped: the file is a committed prefix of
			// what was applied, and the entries after it are applied
			// again from the Raft log at the next start.
			err = nil
		}
		d.abandonHeld() // stops the timer
		if d.opts.DeferSync && err == nil {
			err = d.db.Sync()
		}
		err = errors.Join(err, d.db.Close())
		d.db = nil
	}
	d.mu.Unlock()
	d.retired.Wait()
	if closed && err == nil && d.opts.DeferSync {
		err = markClean(d.path)
	}
	return err
}

// Abandon closes the file without syncing it or marking it clean, as a
// crash would leave it: for tests.
func (d *DB) Abandon() error {
	d.mu.Lock()
	var err error
	if d.db != nil {
		d.abandonHeld()
		err = d.db.Close()
		d.db = nil
	}
	d.mu.Unlock()
	d.retired.Wait()
	return err
}

// AppliedIndex returns the Raft index and term of the last applied entry.
func (d *DB) AppliedIndex() (index, term uint64, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		index, term = readApplied(tx)
		return nil
	})
	return index, term, err
}

// View runs fn in a read transaction. The Reader is valid only inside fn;
// the values its methods return are copies and stay valid.
// It sees every entry Apply returned for; if what Apply holds cannot be
// committed for lack of room (hold.go), it fails with ErrNoSpace.
func (d *DB) View(fn func(*Reader) error) error {
	return d.viewHeld(false, func(tx *bolt.Tx) error {
		return fn(&Reader{tx: tx})
	})
}

// ViewCommitted is View for a read that may lag behind what was applied (a
// stale read): where View fails with ErrNoSpace, it runs fn on what is
// committed, which lacks the entries held since the last commit but is a
// state no reader has seen past.
func (d *DB) ViewCommitted(fn func(*Reader) error) error {
	return d.viewHeld(true, func(tx *bolt.Tx) error {
		return fn(&Reader{tx: tx})
	})
}

func (d *DB) view(fn func(*bolt.Tx) error) error { return d.viewHeld(false, fn) }

// viewHeld commits what Apply holds and runs fn in a read transaction;
// committed reads what was committed when what is held has no room.
func (d *DB) viewHeld(committed bool, fn func(*bolt.Tx) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return ErrClosed
	}
	if err := d.flush(); err != nil && !(committed && errors.Is(err, ErrNoSpace)) {
		return err
	}
	return d.db.View(fn)
}

func readApplied(tx *bolt.Tx) (index, term uint64) {
	v := tx.Bucket(bucketMeta).Get(keyApplied)
	if len(v) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
}

func writeApplied(tx *bolt.Tx, index, term uint64) error {
	v := binary.BigEndian.AppendUint64(u64(index), term)
	return tx.Bucket(bucketMeta).Put(keyApplied, v)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
