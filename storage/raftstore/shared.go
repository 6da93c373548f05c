package raftstore

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// LogIDFile, in a replica directory, names the replica's group in the
// node's shared log. A replica directory made anew (a new generation, a
// replica placed here again) gets a new id, so it never sees entries of an
// earlier one.
const LogIDFile = "log-id"

// SharedLog is one Raft log for every partition replica of a node: a
// Pebble database whose synced commits Pebble groups into one WAL write
// and fsync, so that concurrent appends of all the node's groups share
// their fsyncs. Each replica's entries are keyed by its group id and
// index. The stable store (term and vote) stays in the replica's own file.
type SharedLog struct {
	db      *pebble.DB
	dir     string
	onFatal func(error)
	noSync  atomic.Bool // UnsafeNoSync
	appends Observer    // ObserveAppends; nil: not measured
}

// Observer takes one measurement in seconds; a prometheus.Histogram is one.
type Observer interface{ Observe(seconds float64) }

// ObserveAppends has o measure every synced append (StoreLogs: the batch
// commit, which waits for the WAL fsync it may share with other groups).
// Call it before the first group is opened.
func (s *SharedLog) ObserveAppends(o Observer) { s.appends = o }

// OpenSharedLog opens or creates the shared log in dir. onFatal is called
// when Pebble cannot write or sync (nil: log and exit, as Config.OnFatal).
func OpenSharedLog(dir string, onFatal func(error)) (*SharedLog, error) {
	if onFatal == nil {
		onFatal = exitOnFatal
	}
	s := &SharedLog{dir: dir, onFatal: onFatal}
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{s}})
	if err != nil {
		return nil, fmt.Errorf("open shared raft log %s: %w", dir, err)
	}
	s.db = db
	return s, nil
}

// UnsafeNoSync plants a defect, for herald torture's canary only: appends
// are acknowledged before they are fsynced, so a power loss loses them.
func (s *SharedLog) UnsafeNoSync() { s.noSync.Store(true) }

func (s *SharedLog) writeOpts() *pebble.WriteOptions {
	if s.noSync.Load() {
		return pebble.NoSync
	}
	return pebble.Sync
}

// Close closes the database; every group must be done with it.
func (s *SharedLog) Close() error {
	if s == nil || s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// Drop deletes every entry of the group named in the replica directory
// dir, if it has one: call it before removing the directory.
func (s *SharedLog) Drop(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, LogIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	id, err := parseLogID(b)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, LogIDFile), err)
	}
	return s.db.DeleteRange(entryKey(id, 0), groupEnd(id), pebble.Sync)
}

// pebbleLogger routes Pebble's messages to slog, and its fatal errors (a
// WAL write or sync that failed, a stalled disk) to onFatal.
type pebbleLogger struct{ s *SharedLog }

func (l pebbleLogger) Infof(format string, args ...any) {
	slog.Debug("shared raft log: "+fmt.Sprintf(format, args...), "dir", l.s.dir)
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	slog.Error("shared raft log: "+fmt.Sprintf(format, args...), "dir", l.s.dir)
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.s.onFatal(fmt.Errorf("shared raft log %s: %s", l.s.dir, fmt.Sprintf(format, args...)))
	os.Exit(1) // onFatal is meant not to return; Pebble must not go on
}

// logID returns the group id of the replica directory dir, making one if
// it has none.
func logID(dir string) (uint64, error) {
	path := filepath.Join(dir, LogIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		return parseLogID(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return 0, err
	}
	id := binary.BigEndian.Uint64(raw[:])
	if err := writeFileSynced(path, []byte(hex.EncodeToString(raw[:])+"\n")); err != nil {
		return 0, err
	}
	return id, nil
}

func parseLogID(b []byte) (uint64, error) {
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 8 {
		return 0, fmt.Errorf("bad shared log id %q", bytes.TrimSpace(b))
	}
	return binary.BigEndian.Uint64(raw), nil
}

// writeFileSynced writes path atomically and durably: a synced temporary
// file renamed over it, then the directory synced.
func writeFileSynced(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Keys: 'e', the group id and the index, big-endian, so that a group's
// entries are contiguous and in index order.
func entryKey(id, index uint64) []byte {
	k := make([]byte, 17)
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], id)
	binary.BigEndian.PutUint64(k[9:], index)
	return k
}

// groupEnd is the first key after every entry of group id.
func groupEnd(id uint64) []byte {
	if id == ^uint64(0) {
		return []byte{'f'}
	}
	return entryKey(id+1, 0)
}

// groupLog is one replica's log in the shared log, a raft.LogStore. It
// keeps its first and last index in memory. raft calls it from its main
// loop and its snapshot goroutine at once; mu guards the indexes.
type groupLog struct {
	s  *SharedLog
	id uint64

	mu          sync.Mutex // guards following
	first, last uint64     // 0, 0 when empty
}

var _ raft.LogStore = (*groupLog)(nil)

func (s *SharedLog) group(id uint64) (*groupLog, error) {
	g := &groupLog{s: s, id: id}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(id, 0), UpperBound: groupEnd(id)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if it.First() {
		g.first = binary.BigEndian.Uint64(it.Key()[9:])
	}
	if it.Last() {
		g.last = binary.BigEndian.Uint64(it.Key()[9:])
	}
	return g, it.Error()
}

func (g *groupLog) FirstIndex() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.first, nil
}

func (g *groupLog) LastIndex() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last, nil
}

func (g *groupLog) GetLog(index uint64, log *raft.Log) error {
	v, closer, err := g.s.db.Get(entryKey(g.id, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	return decodeEntry(index, v, log)
}

func (g *groupLog) StoreLog(log *raft.Log) error { return g.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends logs in one synced commit, which Pebble may share with
// other groups' commits.
func (g *groupLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	b := g.s.db.NewBatch()
	defer b.Close()
	var buf []byte
	for _, l := range logs {
		buf = encodeEntry(buf[:0], l)
		if err := b.Set(entryKey(g.id, l.Index), buf, nil); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := b.Commit(g.s.writeOpts()); err != nil {
		return err
	}
	if g.s.appends != nil {
		g.s.appends.Observe(time.Since(start).Seconds())
	}
	g.mu.Lock()
	if g.first == 0 || logs[0].Index < g.first {
		g.first = logs[0].Index
	}
	g.last = max(g.last, logs[len(logs)-1].Index)
	g.mu.Unlock()
	return nil
}

// DeleteRange deletes entries min to max inclusive: raft deletes a prefix
// (compaction after a snapshot) or a suffix (entries a new leader
// overwrites), never a middle.
func (g *groupLog) DeleteRange(min, max uint64) error {
	if err := g.s.db.DeleteRange(entryKey(g.id, min), entryKey(g.id, max+1), pebble.Sync); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.first == 0:
	case min <= g.first && max >= g.last:
		g.first, g.last = 0, 0
	case min <= g.first:
		g.first = max + 1
	case max >= g.last:
		g.last = min - 1
	}
	return nil
}

// An entry's value: term, type and append time, fixed-size, then the
// data's length and the data, then the extensions.
func encodeEntry(buf []byte, l *raft.Log) []byte {
	buf = binary.BigEndian.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(at))
	buf = binary.AppendUvarint(buf, uint64(len(l.Data)))
	buf = append(buf, l.Data...)
	return append(buf, l.Extensions...)
}

func decodeEntry(index uint64, v []byte, l *raft.Log) error {
	if len(v) < 17 {
		return fmt.Errorf("shared raft log: entry %d: %d bytes, want at least 17", index, len(v))
	}
	*l = raft.Log{Index: index, Term: binary.BigEndian.Uint64(v), Type: raft.LogType(v[8])}
	if at := int64(binary.BigEndian.Uint64(v[9:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	n, k := binary.Uvarint(v[17:])
	if k <= 0 || uint64(len(v)-17-k) < n {
		return fmt.Errorf("shared raft log: entry %d: bad data length", index)
	}
	rest := v[17+k:]
	// Copies: Pebble's buffer is valid only until the closer runs.
	l.Data = bytes.Clone(rest[:n])
	if ext := rest[n:]; len(ext) > 0 {
		l.Extensions = bytes.Clone(ext)
	}
	return nil
}

// sharedGroup opens dir's group of s, first moving into it any entries
// that the replica's own file holds (a replica written before the shared
// log): copied in one synced commit, then deleted from the file. A move
// that a crash cut short is finished: entries in both are deleted from the
// file, the group having them.
func sharedGroup(s *SharedLog, dir string, own raft.LogStore) (*groupLog, error) {
	id, err := logID(dir)
	if err != nil {
		return nil, fmt.Errorf("shared raft log id of %s: %w", dir, err)
	}
	g, err := s.group(id)
	if err != nil {
		return nil, fmt.Errorf("open %s's group of the shared raft log: %w", dir, err)
	}
	first, err := own.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := own.LastIndex()
	if err != nil || last == 0 {
		return g, err
	}
	if g.last == 0 {
		logs := make([]*raft.Log, 0, last-first+1)
		for i := first; i <= last; i++ {
			l := new(raft.Log)
			if err := own.GetLog(i, l); err != nil {
				return nil, fmt.Errorf("move entry %d of %s into the shared raft log: %w", i, dir, err)
			}
			logs = append(logs, l)
		}
		if err := g.StoreLogs(logs); err != nil {
			return nil, fmt.Errorf("move entries %d-%d of %s into the shared raft log: %w", first, last, dir, err)
		}
	}
	if err := own.DeleteRange(first, last); err != nil {
		return nil, fmt.Errorf("delete entries %d-%d of %s after moving them: %w", first, last, dir, err)
	}
	return g, nil
}
