package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// identityFile records, in the data directory, what must not change across
// restarts of a node.
const identityFile = "node.json"

// SharedLogDir, in the data directory, holds the Raft log that all the
// node's partition replicas share (raftstore.SharedLog).
const SharedLogDir = "raftlog"

type identity struct {
	NodeID     string `json:"node_id"`
	Partitions uint32 `json:"partitions"`
	// Incarnation is a random id made with the data directory (see
	// heraldv1.Node.Incarnation); a directory made before it existed gets
	// one at its next start.
	Incarnation string `json:"incarnation"`
}

// newIncarnation returns a fresh random incarnation id.
func newIncarnation() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// loadIdentity reads the data directory's identity, or writes want if there
// is none. A directory made for another node id or partition count is
// refused: channels would map to other partitions. The partition count
// is what this node asked for when it was created; the cluster's own
// count lives in the metadata and is fixed when the cluster is founded.
func loadIdentity(dir string, want identity) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		want.Incarnation = newIncarnation()
		return want, writeIdentity(path, want)
	}
	if err != nil {
		return identity{}, fmt.Errorf("read %s: %w", path, err)
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil {
		return identity{}, fmt.Errorf("read %s: %w", path, err)
	}
	if got.NodeID != want.NodeID {
		return identity{}, fmt.Errorf("data directory %s belongs to node %q, not %q", dir, got.NodeID, want.NodeID)
	}
	if want.Partitions != 0 && got.Partitions != want.Partitions {
		return identity{}, fmt.Errorf("data directory %s was created with %d partitions, not %d; the count cannot change",
			dir, got.Partitions, want.Partitions)
	}
	if got.Incarnation == "" {
		got.Incarnation = newIncarnation()
		if err := writeIdentity(path, got); err != nil {
			return identity{}, err
		}
	}
	return got, nil
}

func writeIdentity(path string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSync(path, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeFileSync writes a small file atomically: a temporary file,
// fsynced, renamed over path.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	return err
}
