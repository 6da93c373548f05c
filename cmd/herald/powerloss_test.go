package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/storage/lossyfs"
)

// TestPowerLoss is the power-loss canary: herald dev runs with its data
// directory on a filesystem that loses every write not yet fsynced
// (lossyfs). Writers post to four channels, one writer each; the process
// is SIGKILLed while they post, and the filesystem then "loses power":
// each file keeps a random prefix of its unsynced writes, the last one
// torn. After every round the restarted node must hold every acknowledged
// post exactly once, in acknowledgement order (the post in flight at the
// kill may be there, after them). A missing fsync anywhere on the path of
// an acknowledgement (the Raft log, its directory, the stable store), or
// a state file trusted after an unclean stop, shows up here; a plain
// SIGKILL keeps the page cache and shows nothing.
func TestPowerLoss(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	rounds, perRound := 6, 150
	if testing.Short() {
		rounds, perRound = 3, 60
	}
	backing, mnt := t.TempDir(), t.TempDir()
	fs, err := lossyfs.Mount(backing, mnt, lossyfs.Options{})
	if err != nil {
		t.Fatalf("mount lossyfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := fs.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "data")
	channels := []string{"pl-0", "pl-1", "pl-2", "pl-3"}
	acks := make([][]ack, len(channels))
	inFlight := make([]*ack, len(channels))
	rng := rand.New(rand.NewPCG(20261202, 1))
	var httpAddr, raftAddr string
	for round := 0; round <= rounds; round++ {
		p := startDev(t, devOptions{dataDir: dir, httpAddr: httpAddr, raftAddr: raftAddr, args: []string{"--partitions", "4"}})
		httpAddr, raftAddr = p.HTTPAddr, p.RaftAddr
		if round == 0 {
			for _, ch := range channels {
				createChannel(t, p, ch)
			}
		}
		// What survived the last power loss: every acknowledged post, and
		// the one in flight may be there too (then it counts as made).
		for i, ch := range channels {
			if m := checkHistory(t, ch, history(t, p.Messages, ch), acks[i], inFlight[i]); m != nil {
				acks[i] = append(acks[i], ack{id: inFlight[i].id, text: inFlight[i].text, seq: m.GetSeq()})
			}
			inFlight[i] = nil
		}
		if t.Failed() {
			t.Fatalf("round %d: acknowledged posts lost or changed by the power loss before it", round)
		}
		if round == rounds {
			t.Logf("%d power losses; every acknowledged post survived (%d, %d, %d, %d per channel)",
				rounds, len(acks[0]), len(acks[1]), len(acks[2]), len(acks[3]))
			return
		}

		// Post until each writer has perRound more acknowledgements, then
		// kill the process under them and lose what was not synced.
		var wg sync.WaitGroup
		var mu sync.Mutex
		enough := make(chan struct{})
		remaining := len(channels)
		for i, ch := range channels {
			wg.Go(func() {
				for k := 0; ; k++ {
					a := ack{id: fmt.Sprintf("r%d-%s-%04d", round, ch, k), text: fmt.Sprintf("round %d post %d", round, k)}
					resp, err := post(p.Messages, ch, a.id, a.text)
					if err != nil {
						inFlight[i] = &a
						return
					}
					a.seq = resp.GetMessage().GetSeq()
					acks[i] = append(acks[i], a)
					if k+1 == perRound {
						mu.Lock()
						if remaining--; remaining == 0 {
							close(enough)
						}
						mu.Unlock()
					}
				}
			})
		}
		select {
		case <-enough:
		case <-time.After(2 * time.Minute):
			t.Errorf("round %d: writers did not reach %d posts each within 2 minutes", round, perRound)
		}
		p.Kill()
		wg.Wait()
		before := fs.Stats()
		report, err := fs.PowerLoss(rng)
		if err != nil {
			t.Fatalf("round %d: power loss: %v", round, err)
		}
		t.Logf("round %d: SIGKILL with %d bytes unsynced in %d files; %s", round, before.PendingBytes, before.PendingFiles, report)
		if t.Failed() {
			t.FailNow()
		}
	}
}

// fuseMissing says why this process cannot mount a FUSE filesystem, or ""
// if it can.
func fuseMissing() string {
	if os.Geteuid() != 0 {
		return "mounting a FUSE filesystem needs root here (CI runs as root)"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Sprintf("no /dev/fuse: %v", err)
	}
	return ""
}

// requireFUSE skips t unless this process can mount a FUSE filesystem.
func requireFUSE(t *testing.T) {
	t.Helper()
	if why := fuseMissing(); why != "" {
		t.Skip(why)
	}
}
