package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// ledgerFile records, in the data directory, which Raft replicas this node
// has held with state, so that one whose files are later lost is noticed.
const ledgerFile = "replicas.json"

// ledger is what this data directory has promised in Raft: whether it
// founded the cluster (only founders bootstrap the first placement's
// groups), whether its metadata replica has had state, and which partition
// replicas (by partition and generation) have. A replica that had Raft
// state may have voted or acknowledged entries; started again without it,
// it would forget those promises and could vote twice in a term (Raft
// vote amnesia). So a replica the ledger lists is never started without
// its state. The ledger is written atomically (fsynced, then renamed) and
// mutex-guarded.
type ledger struct {
	path string

	mu   sync.Mutex // guards following
	data ledgerData
}

type ledgerData struct {
	Founder  bool     `json:"founder"`
	Meta     bool     `json:"meta"`
	Replicas []string `json:"replicas"` // "partition/generation", sorted
}

// ErrStateLost is returned (through Node.Err) when a node the cluster
// knows starts without the Raft state it had: its data directory was lost
// or replaced, or a replica's files were deleted. It must not take part
// under its old identity; remove it (herald admin remove) and start it with
// an empty data directory.
var ErrStateLost = errors.New("cluster: this node has lost Raft state the cluster relies on")

func openLedger(dir string) (*ledger, error) {
	l := &ledger{path: filepath.Join(dir, ledgerFile)}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.path, err)
	}
	if err := json.Unmarshal(b, &l.data); err != nil {
		return nil, fmt.Errorf("read %s: %w", l.path, err)
	}
	return l, nil
}

func replicaKey(p uint32, g uint64) string { return fmt.Sprintf("%d/%d", p, g) }

// founder reports whether this data directory founded its cluster.
func (l *ledger) founder() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.data.Founder
}

// metaHeld reports whether the metadata replica has had state here.
func (l *ledger) metaHeld() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.data.Meta
}

// held reports whether partition p's replica of generation g has had
// state here.
func (l *ledger) held(p uint32, g uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := slices.BinarySearch(l.data.Replicas, replicaKey(p, g))
	return ok
}

// setFounder records that this data directory founds its cluster.
func (l *ledger) setFounder() error {
	return l.update(func(d *ledgerData) bool {
		changed := !d.Founder
		d.Founder = true
		return changed
	})
}

// setMetaHeld records that the metadata replica has state.
func (l *ledger) setMetaHeld() error {
	return l.update(func(d *ledgerData) bool {
		changed := !d.Meta
		d.Meta = true
		return changed
	})
}

// setHeld records whether partition p's replica of generation g has state
// here: true once it has, false before its files are deleted.
func (l *ledger) setHeld(p uint32, g uint64, held bool) error {
	k := replicaKey(p, g)
	return l.update(func(d *ledgerData) bool {
		i, ok := slices.BinarySearch(d.Replicas, k)
		switch {
		case held && !ok:
			d.Replicas = slices.Insert(d.Replicas, i, k)
		case !held && ok:
			d.Replicas = slices.Delete(d.Replicas, i, i+1)
		default:
			return false
		}
		return true
	})
}

func (l *ledger) update(change func(*ledgerData) bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.data
	next.Replicas = slices.Clone(l.data.Replicas)
	if !change(&next) {
		return nil
	}
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSync(l.path, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	l.data = next
	return nil
}
