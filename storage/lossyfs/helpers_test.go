//go:build linux

package lossyfs_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/storage/lossyfs"
	"golang.org/x/sys/unix"
)

// childEnv names the child role when the test binary re-execs itself to
// be a process that the test SIGKILLs; see TestMain.
const childEnv = "LOSSYFS_TEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		if err := runChild(role, os.Getenv("LOSSYFS_TEST_PATH")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs the workload of role on path, prints "ready" once every
// write is issued, and then waits to be killed; a check role prints its
// result and returns.
func runChild(role, path string) error {
	var err error
	switch role {
	case "boltcheck":
		out, err := boltCheck(path)
		if err != nil {
			return err
		}
		fmt.Println(out)
		return nil
	case "bbolt":
		err = boltWorkload(path)
	case "pebble":
		err = pebbleWorkload(path)
	default:
		err = fmt.Errorf("unknown child role %q", role)
	}
	if err != nil {
		return err
	}
	fmt.Println("ready")
	select {}
}

// mount mounts a fresh lossyfs over a temporary backing dir and unmounts
// it when the test ends, pass or fail. It skips the test when this
// machine cannot mount FUSE.
func mount(t *testing.T) (fsys *lossyfs.FS, mnt, backing string) {
	t.Helper()
	return mountB(t)
}

// mountB is mount for tests and benchmarks alike.
func mountB(t testing.TB) (fsys *lossyfs.FS, mnt, backing string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("lossyfs needs /dev/fuse: %v", err)
	}
	backing, mnt = t.TempDir(), t.TempDir()
	fsys, err := lossyfs.Mount(backing, mnt, lossyfs.Options{
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("lossyfs cannot mount here (needs root): %v", err)
	}
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := fsys.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH) // best effort: leave no stale mount
		}
	})
	return fsys, mnt, backing
}

// runOutput runs the test binary as a child of role on path and returns
// its output. Reading a mount's file through mmap must happen in another
// process than the one serving the mount: a page fault there can stall
// the Go runtime's stop-the-world while the server goroutine that would
// answer it is stopped.
func runOutput(t *testing.T, role, path string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, "LOSSYFS_TEST_PATH="+path)
	cmd.Stderr = t.Output()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v", role, err)
	}
	return strings.TrimSpace(string(out))
}

// runAndKill starts the test binary as a child of role on path, waits for
// it to report that its writes are issued, and SIGKILLs it.
func runAndKill(t *testing.T, role, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, "LOSSYFS_TEST_PATH="+path)
	cmd.Stderr = t.Output()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	lines := make(chan string, 1) // one line; the reader exits after it
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(line)
		io.Copy(io.Discard, out) // best effort: drain until the child dies
	}()
	select {
	case line := <-lines:
		if line != "ready" {
			cmd.Process.Kill() // best effort: it failed anyway
			cmd.Wait()
			t.Fatalf("child %s: got %q, want ready", role, line)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill() // best effort: it is stuck
		cmd.Wait()
		t.Fatalf("child %s did not get ready within 2m", role)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	cmd.Wait() // error expected: killed
}
