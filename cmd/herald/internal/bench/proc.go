package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; Linux
// fixes it at 100 for every architecture Go supports.
const clockTicks = 100

// cpuSeconds returns the user plus system CPU time of the processes.
func cpuSeconds(pids []int) (float64, error) {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The command name, field 2, is in parentheses and may hold
		// spaces: count fields after its closing one.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
		}
		utime, err1 := strconv.ParseFloat(f[11], 64) // field 14
		stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += (utime + stime) / clockTicks
	}
	return total, nil
}

// syncCounter counts the fsync and fdatasync calls of processes with
// `perf stat` on the syscall tracepoints, which costs the processes
// nothing measurable (no ptrace).
type syncCounter struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// countSyncs starts counting, or says why it cannot (no perf, no
// tracepoints, not permitted).
func countSyncs(pids []int) (*syncCounter, error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, errors.New("perf is not installed (Debian: linux-perf)")
	}
	ids := make([]string, len(pids))
	for i, p := range pids {
		ids[i] = strconv.Itoa(p)
	}
	s := &syncCounter{}
	s.cmd = exec.Command(perf, "stat", "-x", ",", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync",
		"-p", strings.Join(ids, ","))
	s.cmd.Stderr = &s.out // perf stat writes its counts to stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	return s, nil
}

// stop ends the count and returns fsyncs plus fdatasyncs.
func (s *syncCounter) stop() (int64, error) {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	var total int64
	found := 0
	for line := range strings.SplitSeq(s.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || !strings.HasPrefix(f[2], "syscalls:sys_enter_") {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf stat: %s (%q)", strings.TrimSpace(s.out.String()), f[0])
		}
		total += n
		found++
	}
	if found == 0 {
		return 0, fmt.Errorf("perf stat: %s", strings.TrimSpace(s.out.String()))
	}
	return total, nil
}
