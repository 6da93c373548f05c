package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// manifestName is the file in a snapshot directory that lists the others.
const manifestName = "manifest.json"

// manifestFormat is the manifest format this herald writes and reads.
const manifestFormat = 1

// restoreChunk is the size of one RestoreSnapshot message.
const restoreChunk = 1 << 20

// snapshotManifest is DIR/manifest.json: what a snapshot directory holds.
type snapshotManifest struct {
	Format     int            `json:"format"`
	Partitions uint32         `json:"partitions"`
	SavedAt    string         `json:"saved_at"` // RFC 3339
	Files      []manifestFile `json:"files"`
}

// manifestFile is one partition's snapshot file.
type manifestFile struct {
	Partition    uint32 `json:"partition"`
	File         string `json:"file"` // relative to the directory
	Bytes        int64  `json:"bytes"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"` // hex
}

// snapshotFileName names partition p's file in a snapshot directory.
func snapshotFileName(p uint32) string { return fmt.Sprintf("partition-%03d.snap", p) }

func newAdminSnapshotCmd(o *adminOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the whole cluster's state to a directory, or restore it",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newAdminSnapshotSaveCmd(o), newAdminSnapshotRestoreCmd(o))
	return cmd
}

func newAdminSnapshotSaveCmd(o *adminOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "save DIR",
		Short: "Save a snapshot of every partition to DIR",
		Long: `Save a snapshot of every partition, taken on its leader, to DIR (created if
missing): one file per partition, DIR/partition-NNN.snap, each written to a
temporary file, synced and renamed into place, then DIR/manifest.json:

  {"format": 1, "partitions": 16, "saved_at": "<RFC 3339>",
   "files": [{"partition": 0, "file": "partition-000.snap", "bytes": 32768,
              "applied_index": 4521, "sha256": "<64 hex>"}, ...]}

Partitions are saved one after another, each at its own point in time: a
write that lands during the save may be in one partition's file and not
yet in another's. DIR must not hold a snapshot already (a manifest.json)
unless --force is given. The files hold every message: keep them private.

Prints a progress line per partition and a summary table; with -o json the
progress lines go to stderr and stdout gets {"dir": "DIR", "manifest": {...}}.
Restore with "herald admin snapshot restore DIR".`,
		Example: `  herald admin snapshot save backup/2026-11-27`,
		Args:    positional("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				return c.saveSnapshot(ctx, args[0], force)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite a snapshot already in DIR")
	return cmd
}

// progress is where snapshot progress lines go: stdout for tables,
// stderr when stdout carries JSON.
func (c *adminClient) progress() io.Writer {
	if c.opts.json() {
		return c.errOut
	}
	return c.out
}

func (c *adminClient) saveSnapshot(ctx context.Context, dir string, force bool) error {
	begin := time.Now()
	manifestPath := filepath.Join(dir, manifestName)
	switch _, err := os.Stat(manifestPath); {
	case err == nil && !force:
		return fmt.Errorf("%s already holds a snapshot (%s); pass --force to overwrite it, or choose another directory", dir, manifestName)
	case err == nil:
		// A half-overwritten snapshot must not pass for a whole one.
		if err := os.Remove(manifestPath); err != nil {
			return fmt.Errorf("remove the old manifest: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("snapshot directory: %w", err)
	}
	ring, err := c.getRing(ctx)
	if err != nil {
		return err
	}
	count := ring.GetPartitionCount()
	if count == 0 {
		return fmt.Errorf("the cluster at %s reports no partitions yet; try again once it is ready", c.opts.addr)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the snapshot directory: %w", err)
	}
	m := snapshotManifest{Format: manifestFormat, Partitions: count}
	var total int64
	for p := range count {
		f, err := c.savePartition(ctx, dir, p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, f)
		total += f.Bytes
		fmt.Fprintf(c.progress(), "partition %d (%d of %d): %s, applied index %d\n",
			p, p+1, count, humanBytes(f.Bytes), f.AppliedIndex)
	}
	m.SavedAt = time.Now().UTC().Format(time.RFC3339)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, manifestName, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}); err != nil {
		return fmt.Errorf("write the manifest: %w", err)
	}
	if c.opts.json() {
		return writeJSON(c.out, struct {
			Dir      string           `json:"dir"`
			Manifest snapshotManifest `json:"manifest"`
		}{dir, m})
	}
	fmt.Fprintln(c.out)
	return writeSnapshotFiles(c.out, m.Files, fmt.Sprintf("saved %d partitions (%s) to %s in %v",
		count, humanBytes(total), manifestPath, time.Since(begin).Round(time.Millisecond)))
}

// savePartition streams partition p's snapshot into its file in dir.
func (c *adminClient) savePartition(ctx context.Context, dir string, p uint32) (manifestFile, error) {
	what := fmt.Sprintf("save partition %d", p)
	mf := manifestFile{Partition: p, File: snapshotFileName(p)}
	ctx, cancel := c.call(ctx)
	defer cancel()
	stream, err := c.api.SaveSnapshot(ctx, &heraldv1.SaveSnapshotRequest{Partition: p})
	if err != nil {
		return mf, c.fail(what, err)
	}
	defer stream.Close()
	sum := sha256.New()
	err = writeFileAtomic(dir, mf.File, func(w io.Writer) error {
		w = io.MultiWriter(w, sum)
		for stream.Receive() {
			msg := stream.Msg()
			if msg.GetPartition() != p {
				return fmt.Errorf("%s: the server sent partition %d", what, msg.GetPartition())
			}
			// The applied index may come with any message; the server
			// sends it once.
			if i := msg.GetAppliedIndex(); i != 0 {
				mf.AppliedIndex = i
			}
			n, err := w.Write(msg.GetData())
			mf.Bytes += int64(n)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		if err := stream.Err(); err != nil {
			return c.fail(what, err)
		}
		if mf.Bytes == 0 {
			return fmt.Errorf("%s: the server sent an empty snapshot", what)
		}
		return nil
	})
	mf.SHA256 = hex.EncodeToString(sum.Sum(nil))
	return mf, err
}

// writeFileAtomic writes dir/name through write: to a temporary file in
// dir, synced, then renamed over name, and the directory synced. On error
// it leaves name as it was.
func writeFileAtomic(dir, name string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()           // best effort: the write already failed
			_ = os.Remove(f.Name()) // best effort, as above
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func newAdminSnapshotRestoreCmd(o *adminOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "restore DIR",
		Short: "Restore every partition from a snapshot saved by snapshot save",
		Long: `Restore a snapshot that "herald admin snapshot save" wrote to DIR.

It is meant for a FRESH cluster with the SAME partition count as the one
saved, with every node up: for each partition it REPLACES the partition's
whole state with the saved one, on every replica (through the partition's
Raft log, so replicas that are down get it when they return). The cluster
refuses a partition that has already applied more than its snapshot.

First it reads DIR/manifest.json and checks every file's size and SHA-256
and that the cluster's partition count equals the snapshot's; it restores
nothing unless all of that holds. Then it streams each partition's file
(in 1 MiB messages) to the partition's leader, printing a progress line per
partition and a summary table. With -o json the progress lines go to
stderr and stdout gets
  {"dir": "DIR", "files": [{"partition": 0, "file": "partition-000.snap",
   "bytes": 32768, "applied_index": 4521, "sha256": "<64 hex>"}, ...]}
where applied_index is the index the cluster restored.

To move a cluster's data to a new cluster:
  herald admin snapshot save backup --addr OLD:7700
  herald admin snapshot restore backup --addr NEW:7700`,
		Example: `  herald admin snapshot restore backup/2026-11-27 --addr 127.0.0.1:7700`,
		Args:    positional("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, c *adminClient) error {
				return c.restoreSnapshot(ctx, args[0])
			})
		},
	}
}

// readManifest reads dir's manifest and checks it and every file it
// lists: the format, one file per partition, sizes and SHA-256s.
func readManifest(dir string) (*snapshotManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s has no %s: not a snapshot saved by herald admin snapshot save", dir, manifestName)
	}
	if err != nil {
		return nil, err
	}
	var m snapshotManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(dir, manifestName), err)
	}
	if m.Format != manifestFormat {
		return nil, fmt.Errorf("%s: format %d; this herald reads format %d", filepath.Join(dir, manifestName), m.Format, manifestFormat)
	}
	if m.Partitions == 0 || len(m.Files) != int(m.Partitions) {
		return nil, fmt.Errorf("%s: lists %d files for %d partitions; want one per partition",
			filepath.Join(dir, manifestName), len(m.Files), m.Partitions)
	}
	seen := make([]bool, m.Partitions)
	for _, f := range m.Files {
		if f.Partition >= m.Partitions || seen[f.Partition] {
			return nil, fmt.Errorf("%s: partition %d is out of range or listed twice", filepath.Join(dir, manifestName), f.Partition)
		}
		seen[f.Partition] = true
		if !filepath.IsLocal(f.File) || filepath.Base(f.File) != f.File {
			return nil, fmt.Errorf("%s: file %q of partition %d is not a file name in %s", filepath.Join(dir, manifestName), f.File, f.Partition, dir)
		}
		if err := checkSnapshotFile(dir, f); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// checkSnapshotFile checks a file's size and SHA-256 against the manifest.
func checkSnapshotFile(dir string, f manifestFile) error {
	path := filepath.Join(dir, f.File)
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("partition %d: %w", f.Partition, err)
	}
	defer r.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, r)
	if err != nil {
		return fmt.Errorf("partition %d: read %s: %w", f.Partition, path, err)
	}
	if n != f.Bytes {
		return fmt.Errorf("partition %d: %s is %d bytes; the manifest says %d", f.Partition, path, n, f.Bytes)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("partition %d: %s has SHA-256 %s; the manifest says %s: the file is damaged", f.Partition, path, got, f.SHA256)
	}
	return nil
}

func (c *adminClient) restoreSnapshot(ctx context.Context, dir string) error {
	begin := time.Now()
	m, err := readManifest(dir)
	if err != nil {
		return err
	}
	ring, err := c.getRing(ctx)
	if err != nil {
		return err
	}
	if got := ring.GetPartitionCount(); got != m.Partitions {
		return fmt.Errorf("the snapshot in %s has %d partitions but the cluster at %s has %d: restore needs a fresh cluster with the same partition count (--partitions %d)",
			dir, m.Partitions, c.opts.addr, got, m.Partitions)
	}
	files := make([]manifestFile, len(m.Files))
	for _, f := range m.Files {
		files[f.Partition] = f
	}
	var total int64
	for i, f := range files {
		index, err := c.restorePartition(ctx, dir, f)
		if err != nil {
			return err
		}
		files[i].AppliedIndex = index
		total += f.Bytes
		fmt.Fprintf(c.progress(), "partition %d (%d of %d): %s, applied index %d\n",
			f.Partition, i+1, len(files), humanBytes(f.Bytes), index)
	}
	if c.opts.json() {
		return writeJSON(c.out, struct {
			Dir   string         `json:"dir"`
			Files []manifestFile `json:"files"`
		}{dir, files})
	}
	fmt.Fprintln(c.out)
	return writeSnapshotFiles(c.out, files, fmt.Sprintf("restored %d partitions (%s) from %s in %v",
		len(files), humanBytes(total), dir, time.Since(begin).Round(time.Millisecond)))
}

// restorePartition streams one partition's file with RestoreSnapshot and
// returns the applied index the cluster restored.
func (c *adminClient) restorePartition(ctx context.Context, dir string, f manifestFile) (uint64, error) {
	what := fmt.Sprintf("restore partition %d", f.Partition)
	r, err := os.Open(filepath.Join(dir, f.File))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	defer r.Close()
	ctx, cancel := c.call(ctx)
	defer cancel()
	stream, err := c.restore.RestoreSnapshot(ctx)
	if err != nil {
		return 0, c.fail(what, err)
	}
	buf := make([]byte, restoreChunk)
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &heraldv1.RestoreSnapshotRequest{Data: buf[:n]}
			if first {
				msg.Partition, first = f.Partition, false
			}
			if err := stream.Send(msg); err != nil {
				break // the server stopped reading; CloseAndReceive says why
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			_, _ = stream.CloseAndReceive() // best effort: the read error is the one to report
			return 0, fmt.Errorf("%s: read %s: %w", what, f.File, rerr)
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return 0, c.fail(what, err)
	}
	return resp.GetAppliedIndex(), nil
}
