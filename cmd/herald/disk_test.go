package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/gateway"
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
	p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "1", "--min-free-disk", "0"}})
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
		// The partitions' shared Raft log (DATA/raftlog), or a replica's
		// own raft.db (its term and vote, and the metadata group's log).
		names := strings.Contains(line, "raft.db") || strings.Contains(line, "raft log "+filepath.Join(p.dataDir, "raftlog"))
		if names && strings.Contains(line, "no space left on device") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		t.Errorf("stderr: no line names the Raft log and \"no space left on device\"; got:\n%s", stderr)
	}
}

// postUntilRefused posts text to channel through p until a post is
// refused with resource_exhausted, within exitTimeout, and returns the
// refusal and how many posts were applied first. Any other error fails
// the test. The node measures its space once a second, so how many posts
// get in first depends on how fast they are: only time bounds the loop.
func postUntilRefused(t *testing.T, p *proc, channel, text string) (*connect.Error, int) {
	t.Helper()
	begin := time.Now()
	for applied := 0; ; applied++ {
		if time.Since(begin) > exitTimeout {
			t.Fatalf("%d posts applied in %v; want resource_exhausted", applied, time.Since(begin).Round(time.Millisecond))
		}
		_, err := post(p.Messages, channel, fmt.Sprintf("m-%d-%d", time.Now().UnixNano(), applied), text)
		if err == nil {
			continue
		}
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Fatalf("post after %d applied: got %v, want nil or resource_exhausted", applied, err)
		}
		if got := ce.Meta().Get(gateway.OutcomeHeader); got != gateway.OutcomeNotApplied {
			t.Errorf("refusal's %s header: got %q, want %q", gateway.OutcomeHeader, got, gateway.OutcomeNotApplied)
		}
		t.Logf("refused after %d posts, %v: %s", applied, time.Since(begin).Round(time.Millisecond), ce.Message())
		return ce, applied
	}
}

// TestFreeDiskReserve runs herald dev with its data directory on a small
// tmpfs and a free-disk reserve, and fills the filesystem below the
// reserve: posts must be refused with resource_exhausted and a message
// naming the node, its free space and the reserve, while history still
// reads; once the filler is removed, posts succeed again without a
// restart.
func TestFreeDiskReserve(t *testing.T) {
	t.Parallel()
	dir := storagetest.MountTmpfs(t, 64<<20)
	p := startDev(t, devOptions{dataDir: dir, args: []string{"--partitions", "1", "--min-free-disk", "32MiB"}})
	createChannel(t, p, "reserve")
	if _, err := post(p.Messages, "reserve", "before", "before the disk filled"); err != nil {
		t.Fatalf("PostMessage before the disk filled: %v", err)
	}
	filler := storagetest.Fill(t, dir, 16<<20)
	t.Logf("filled the tmpfs: %d bytes free, reserve 32 MiB", storagetest.Free(t, dir))

	ce, applied := postUntilRefused(t, p, "reserve", "hello")
	for _, want := range []string{"node n1 has", "below its reserve of 32 MiB", "--min-free-disk"} {
		if !strings.Contains(ce.Message(), want) {
			t.Errorf("refusal: got %q, want it to say %q", ce.Message(), want)
		}
	}
	if got, want := len(history(t, p.Messages, "reserve")), 1+applied; got != want {
		t.Errorf("history while below the reserve: got %d messages, want %d", got, want)
	}

	filler.Remove()
	begin := time.Now()
	for {
		_, err := post(p.Messages, "reserve", "after", "after the filler was removed")
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Since(begin) > exitTimeout {
			t.Fatalf("post after the filler was removed: %v (%v later); want success within %v",
				err, time.Since(begin).Round(time.Millisecond), exitTimeout)
		}
		time.Sleep(50 * time.Millisecond) // poll: the node re-measures every second
	}
	t.Logf("posts succeed again %v after the filler was removed", time.Since(begin).Round(time.Millisecond))
	if code, _ := p.Signal(syscall.SIGTERM); code != 0 {
		t.Errorf("exit status after SIGTERM: got %d, want 0", code)
	}
}

// TestStateQuota runs herald dev with a 1 MiB state quota and posts until
// the partition's state passes it: posts must then be refused with
// resource_exhausted and a message naming the node, the state size and
// the quota, while history still reads everything applied.
func TestStateQuota(t *testing.T) {
	t.Parallel()
	p := startDev(t, devOptions{args: []string{"--partitions", "1", "--state-quota", "1MiB"}})
	createChannel(t, p, "quota")
	ce, applied := postUntilRefused(t, p, "quota", bigText)
	for _, want := range []string{"its state on node n1 holds", "over the quota of 1 MiB", "--state-quota"} {
		if !strings.Contains(ce.Message(), want) {
			t.Errorf("refusal: got %q, want it to say %q", ce.Message(), want)
		}
	}
	if min := (1 << 20) / (2 * len(bigText)); applied < min {
		t.Errorf("refused after %d posts of %d bytes; want at least %d to fit in 1 MiB", applied, len(bigText), min)
	}
	if got := len(history(t, p.Messages, "quota")); got != applied {
		t.Errorf("history over the quota: got %d messages, want %d", got, applied)
	}
}
