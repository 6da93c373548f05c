package main

import (
	"context"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/storage/storagetest"
)

// bigText is a post of about 32 KB, so that a few posts need new pages in
// both the Raft log and the state file.
var bigText = strings.Repeat("0123456789abcdef", 2000)

// TestLogWriteErrorStopsProcess runs herald dev with its data directory on
// a small tmpfs, fills the filesystem, and posts until the Raft log's next
// write fails with ENOSPC. The process must stop by itself, with a
// non-zero exit status and a line on stderr that names the log file and
// the error (DESIGN.md: "Any log write or sync error stops the process"),
// instead of stepping down and retrying the write, or panicking.
func TestLogWriteErrorStopsProcess(t *testing.T) {
	t.Parallel()
	dir := storagetest.MountTmpfs(t, 16<<20)
	p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "1"}})
	createChannel(t, p, "full")
	if _, err := post(p.Messages, "full", "", "before the disk filled"); err != nil {
		t.Fatalf("PostMessage before the disk filled: %v", err)
	}
	filler := storagetest.Fill(t, dir, 0)
	t.Logf("filled the tmpfs with %d bytes; %d free", filler.Size(), storagetest.Free(t, dir))

	begin := time.Now()
	posts, failed := 0, 0
	for running := true; running; {
		select {
		case <-p.done:
			running = false
			continue
		default:
		}
		if time.Since(begin) > exitTimeout {
			t.Fatalf("still running %v after the disk filled (%d posts, %d failed); want it to stop at the first failed log write\nstderr:\n%s",
				exitTimeout, posts, failed, p.Stderr())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.Messages.PostMessage(ctx, &heraldv1.PostMessageRequest{ChannelId: "full", Text: bigText})
		cancel()
		posts++
		if err != nil {
			failed++
		}
	}
	code := p.cmd.ProcessState.ExitCode()
	t.Logf("exited with status %d %v after the disk filled, after %d posts (%d failed)",
		code, time.Since(begin).Round(time.Millisecond), posts, failed)
	stderr := p.Stderr()
	if code == 0 {
		t.Errorf("exit status: got 0, want non-zero")
	}
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("stderr has a panic; want one clear line:\n%s", stderr)
	}
	var lines []string
	for line := range strings.Lines(stderr) {
		if strings.Contains(line, "raft.db") && strings.Contains(line, "no space left on device") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		t.Errorf("stderr: no line names raft.db and \"no space left on device\"; got:\n%s", stderr)
	}
}
