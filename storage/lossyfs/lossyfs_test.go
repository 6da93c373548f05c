//go:build linux

package lossyfs_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/heraldhq/herald/storage/lossyfs"
)

// fileModel is what one file should hold: its content at the last fsync
// and the changes since, replayed in the test as an independent check of
// what the filesystem does.
type fileModel struct {
	name    string
	durable []byte
	pending []change
}

// change is a write of data at off, or (data == nil) a truncate to size.
type change struct {
	off  int64
	data []byte
	size int64
}

func (c change) apply(b []byte) []byte {
	if c.data == nil {
		if c.size <= int64(len(b)) {
			return b[:c.size]
		}
		return append(b, make([]byte, c.size-int64(len(b)))...)
	}
	if end := c.off + int64(len(c.data)); end > int64(len(b)) && len(c.data) > 0 {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[c.off:], c.data)
	return b
}

// replay returns the content after the first kept changes whole and torn
// leading bytes of the next one.
func (m *fileModel) replay(kept int, torn int64) []byte {
	b := bytes.Clone(m.durable)
	for _, c := range m.pending[:kept] {
		b = c.apply(b)
	}
	if kept < len(m.pending) && m.pending[kept].data != nil {
		c := m.pending[kept]
		c.data = c.data[:torn]
		b = c.apply(b)
	}
	return b
}

// randomHistory writes, truncates and fsyncs files under dir through the
// mount as rng says, closes them without a final fsync, and returns the
// model of each file.
func randomHistory(t *testing.T, dir string, rng *rand.Rand) []*fileModel {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var models []*fileModel
	for i := range 4 {
		m := &fileModel{name: fmt.Sprintf("f%d", i)}
		f, err := os.OpenFile(filepath.Join(dir, m.name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cur := []byte{}
		for range 3 + rng.IntN(12) {
			switch p := rng.IntN(10); {
			case p < 2:
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				m.durable, m.pending = bytes.Clone(cur), nil
			case p < 3:
				c := change{size: rng.Int64N(int64(len(cur)) + 100)}
				if err := f.Truncate(c.size); err != nil {
					t.Fatal(err)
				}
				m.pending, cur = append(m.pending, c), c.apply(cur)
			default:
				c := change{off: rng.Int64N(int64(len(cur)) + 50), data: make([]byte, 1+rng.IntN(300))}
				for j := range c.data {
					c.data[j] = byte('a' + rng.IntN(26))
				}
				if _, err := f.WriteAt(c.data, c.off); err != nil {
					t.Fatal(err)
				}
				m.pending, cur = append(m.pending, c), c.apply(cur)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		models = append(models, m)
	}
	return models
}

// checkAgainstModel reads every file through the mount and compares it to
// the model replayed as far as rep says the loss kept.
func checkAgainstModel(t *testing.T, backing, dir string, models []*fileModel, rep lossyfs.Report) {
	t.Helper()
	reports := make(map[string]lossyfs.FileReport)
	for _, fr := range rep.Files {
		reports[fr.Path] = fr
	}
	for _, m := range models {
		path := filepath.Join(dir, m.name)
		rel, _ := filepath.Rel(backing, path)
		fr, ok := reports[rel]
		if !ok && len(m.pending) > 0 {
			t.Fatalf("%s: no report for %d pending changes; report:\n%v", rel, len(m.pending), rep)
		}
		if ok && fr.Pending != len(m.pending) {
			t.Fatalf("%s: got %d pending changes in report, want %d", rel, fr.Pending, len(m.pending))
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := m.replay(fr.Kept, fr.TornBytes); !bytes.Equal(got, want) {
			t.Fatalf("%s after power loss (%+v): got %d bytes %q, want %d bytes %q", rel, fr, len(got), got, len(want), want)
		}
	}
}

// TestPowerLossKeepsSyncedAndAPrefixOfTheRest runs random histories of
// writes, truncates and fsyncs, loses power, and checks each file against
// an independent model: the content at the last fsync plus exactly the
// prefix of later changes (the last one torn) that the report names.
func TestPowerLossKeepsSyncedAndAPrefixOfTheRest(t *testing.T) {
	fsys, mnt, _ := mount(t)
	var allKept, torn, allDropped int
	for seed := range uint64(12) {
		dir := filepath.Join(mnt, fmt.Sprintf("seed%d", seed))
		models := randomHistory(t, dir, rand.New(rand.NewPCG(seed, 1)))
		if st := fsys.Stats(); st.PendingFiles == 0 {
			t.Fatalf("seed %d: got no pending files before power loss, want some", seed)
		}
		rep, err := fsys.PowerLoss(rand.New(rand.NewPCG(seed, 2)))
		if err != nil {
			t.Fatalf("seed %d: power loss: %v", seed, err)
		}
		t.Logf("seed %d: %v", seed, rep)
		checkAgainstModel(t, mnt, dir, models, rep)
		if st := fsys.Stats(); st.PendingFiles != 0 || st.PendingBytes != 0 {
			t.Fatalf("seed %d: after power loss got %+v, want nothing pending", seed, st)
		}
		for _, fr := range rep.Files {
			switch {
			case fr.Kept == fr.Pending:
				allKept++
			case fr.TornBytes > 0:
				torn++
			case fr.Kept == 0:
				allDropped++
			}
		}
	}
	// The seeds are fixed, so this checks PowerLoss really varies its cut.
	if allKept == 0 || torn == 0 || allDropped == 0 {
		t.Fatalf("got %d files kept whole, %d torn, %d dropped whole; want each at least once", allKept, torn, allDropped)
	}
}

// TestPowerLossSameSeedSameResult runs one history on two mounts and loses
// power with the same seed: the reports and the files must match.
func TestPowerLossSameSeedSameResult(t *testing.T) {
	var reps [2]lossyfs.Report
	var contents [2][][]byte
	for i := range 2 {
		fsys, mnt, _ := mount(t)
		dir := filepath.Join(mnt, "d")
		models := randomHistory(t, dir, rand.New(rand.NewPCG(42, 1)))
		rep, err := fsys.PowerLoss(rand.New(rand.NewPCG(42, 2)))
		if err != nil {
			t.Fatal(err)
		}
		checkAgainstModel(t, mnt, dir, models, rep)
		reps[i] = rep
		for _, m := range models {
			b, err := os.ReadFile(filepath.Join(dir, m.name))
			if err != nil {
				t.Fatal(err)
			}
			contents[i] = append(contents[i], b)
		}
	}
	if !reflect.DeepEqual(reps[0], reps[1]) {
		t.Fatalf("same seed, different reports:\n%v\n%v", reps[0], reps[1])
	}
	if !reflect.DeepEqual(contents[0], contents[1]) {
		t.Fatal("same seed, different file contents")
	}
}

// writeFile creates (or truncates) path through the mount, writes data,
// and fsyncs it if sync is set.
func writeFile(t *testing.T, path string, data string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNamespaceOpsAreDurableAtOnce checks the documented model: mkdir,
// create, rename and unlink survive power loss without a directory fsync,
// and the pending data of a file follows it through a rename.
func TestNamespaceOpsAreDurableAtOnce(t *testing.T) {
	fsys, mnt, _ := mount(t)
	p := func(name string) string { return filepath.Join(mnt, name) }
	if err := os.Mkdir(p("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("dir/new"), "abc", false)
	if err := os.Rename(p("dir/new"), p("dir/renamed")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("gone"), "synced", true)
	writeFile(t, p("gone"), "pending", false)
	if err := os.Remove(p("gone")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("victim"), "old", true)
	writeFile(t, p("repl"), "new", true)
	writeFile(t, p("repl"), "more", false)
	if err := os.Rename(p("repl"), p("victim")); err != nil {
		t.Fatal(err)
	}

	rep, err := fsys.PowerLoss(rand.New(rand.NewPCG(7, 7)))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	var paths []string
	for _, fr := range rep.Files {
		paths = append(paths, fr.Path)
	}
	if want := []string{"dir/renamed", "victim"}; !reflect.DeepEqual(paths, want) {
		t.Fatalf("got report for %q, want %q", paths, want)
	}
	for _, tc := range []struct {
		name, durable, pending string
		kept                   int64
	}{
		{"dir/renamed", "", "abc", rep.Files[0].KeptBytes},
		{"victim", "new", "more", rep.Files[1].KeptBytes},
	} {
		got, err := os.ReadFile(p(tc.name))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if want := tc.durable + tc.pending[:tc.kept]; string(got) != want {
			t.Errorf("%s: got %q, want %q", tc.name, got, want)
		}
	}
	for _, name := range []string{"gone", "repl", "dir/new"} {
		if _, err := os.Stat(p(name)); !os.IsNotExist(err) {
			t.Errorf("%s: got stat error %v, want not exist", name, err)
		}
	}
}
