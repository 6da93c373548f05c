package raftlog_test

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/heraldhq/herald/cluster/internal/raftlog"
)

// capture returns an hclog.Logger writing to a text handler at level, and
// the buffer it writes to. Times are removed so lines compare exactly.
func capture(t *testing.T, level slog.Level) (hclog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return raftlog.New(slog.New(h)), &buf
}

func TestLevels(t *testing.T) {
	tests := []struct {
		name    string
		handler slog.Level
		log     func(hclog.Logger)
		want    string
	}{
		{"trace at trace", raftlog.LevelTrace, func(l hclog.Logger) { l.Trace("m") }, "level=DEBUG-4 msg=m\n"},
		{"trace at debug", slog.LevelDebug, func(l hclog.Logger) { l.Trace("m") }, ""},
		{"debug", slog.LevelDebug, func(l hclog.Logger) { l.Debug("m") }, "level=DEBUG msg=m\n"},
		{"debug at info", slog.LevelInfo, func(l hclog.Logger) { l.Debug("m") }, ""},
		{"info", slog.LevelInfo, func(l hclog.Logger) { l.Info("m") }, "level=INFO msg=m\n"},
		{"warn", slog.LevelInfo, func(l hclog.Logger) { l.Warn("m") }, "level=WARN msg=m\n"},
		{"error", slog.LevelError, func(l hclog.Logger) { l.Error("m") }, "level=ERROR msg=m\n"},
		{"warn at error", slog.LevelError, func(l hclog.Logger) { l.Warn("m") }, ""},
		{"Log warn", slog.LevelInfo, func(l hclog.Logger) { l.Log(hclog.Warn, "m") }, "level=WARN msg=m\n"},
		{"Log no level", slog.LevelInfo, func(l hclog.Logger) { l.Log(hclog.NoLevel, "m") }, "level=INFO msg=m\n"},
		{"Log off", raftlog.LevelTrace, func(l hclog.Logger) { l.Log(hclog.Off, "m") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := capture(t, tt.handler)
			tt.log(l)
			if got := buf.String(); got != tt.want {
				t.Errorf("handler at %v: got %q, want %q", tt.handler, got, tt.want)
			}
		})
	}
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		args []any
		want string
	}{
		{"none", nil, "level=INFO msg=m\n"},
		{"pairs", []any{"term", 3, "peer", "n2"}, "level=INFO msg=m term=3 peer=n2\n"},
		{"odd", []any{"term", 3, "dangling"}, "level=INFO msg=m term=3 EXTRA_VALUE_AT_END=dangling\n"},
		{"non-string key", []any{7, "x"}, "level=INFO msg=m 7=x\n"},
		{"hclog helpers", []any{"h", hclog.Hex(255), "o", hclog.Octal(8), "b", hclog.Binary(5), "f", hclog.Fmt("%d-%s", 1, "a"), "q", hclog.Quote("a b")},
			`level=INFO msg=m h=0xff o=010 b=0b101 f=1-a q="\"a b\""` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := capture(t, slog.LevelInfo)
			l.Info("m", tt.args...)
			if got := buf.String(); got != tt.want {
				t.Errorf("Info(%q, %v): got %q, want %q", "m", tt.args, got, tt.want)
			}
		})
	}
}

func TestWithAndNamed(t *testing.T) {
	tests := []struct {
		name     string
		derive   func(hclog.Logger) hclog.Logger
		wantName string
		wantLine string
	}{
		{"with", func(l hclog.Logger) hclog.Logger { return l.With("node", "n1") },
			"", "level=INFO msg=m node=n1 k=v\n"},
		{"with twice replaces", func(l hclog.Logger) hclog.Logger { return l.With("node", "n1").With("node", "n2", "term", 4) },
			"", "level=INFO msg=m node=n2 term=4 k=v\n"},
		{"named", func(l hclog.Logger) hclog.Logger { return l.Named("raft") },
			"raft", "level=INFO msg=m logger=raft k=v\n"},
		{"named twice", func(l hclog.Logger) hclog.Logger { return l.Named("raft").Named("net") },
			"raft.net", "level=INFO msg=m logger=raft.net k=v\n"},
		{"reset named", func(l hclog.Logger) hclog.Logger { return l.Named("raft").ResetNamed("snap") },
			"snap", "level=INFO msg=m logger=snap k=v\n"},
		{"named with", func(l hclog.Logger) hclog.Logger { return l.With("partition", 2).Named("raft") },
			"raft", "level=INFO msg=m logger=raft partition=2 k=v\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, buf := capture(t, slog.LevelInfo)
			l := tt.derive(base)
			l.Info("m", "k", "v")
			if got := buf.String(); got != tt.wantLine {
				t.Errorf("got %q, want %q", got, tt.wantLine)
			}
			if got := l.Name(); got != tt.wantName {
				t.Errorf("Name: got %q, want %q", got, tt.wantName)
			}
			buf.Reset()
			base.Info("m")
			if got, want := buf.String(), "level=INFO msg=m\n"; got != want {
				t.Errorf("parent after derive: got %q, want %q", got, want)
			}
		})
	}
}

func TestImpliedArgs(t *testing.T) {
	l, _ := capture(t, slog.LevelInfo)
	got := l.With("a", 1, "b", 2).ImpliedArgs()
	want := []any{"a", 1, "b", 2}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestIsLevel(t *testing.T) {
	tests := []struct {
		handler                         slog.Level
		trace, debug, info, warn, error bool
	}{
		{raftlog.LevelTrace, true, true, true, true, true},
		{slog.LevelDebug, false, true, true, true, true},
		{slog.LevelInfo, false, false, true, true, true},
		{slog.LevelWarn, false, false, false, true, true},
		{slog.LevelError, false, false, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.handler.String(), func(t *testing.T) {
			l, _ := capture(t, tt.handler)
			got := [5]bool{l.IsTrace(), l.IsDebug(), l.IsInfo(), l.IsWarn(), l.IsError()}
			want := [5]bool{tt.trace, tt.debug, tt.info, tt.warn, tt.error}
			if got != want {
				t.Errorf("handler at %v: got Is{Trace,Debug,Info,Warn,Error} %v, want %v", tt.handler, got, want)
			}
		})
	}
}

func TestSetLevel(t *testing.T) {
	l, buf := capture(t, raftlog.LevelTrace)
	if got, want := l.GetLevel(), hclog.Trace; got != want {
		t.Errorf("GetLevel before SetLevel: got %v, want %v", got, want)
	}
	child := l.Named("child")
	l.SetLevel(hclog.Warn)
	if got, want := child.GetLevel(), hclog.Warn; got != want {
		t.Errorf("child GetLevel: got %v, want %v", got, want)
	}
	child.Info("dropped")
	child.Debug("dropped")
	child.Warn("kept")
	if got, want := buf.String(), "level=WARN msg=kept logger=child\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if l.IsInfo() || !l.IsWarn() {
		t.Errorf("IsInfo, IsWarn at Warn: got %v, %v, want false, true", l.IsInfo(), l.IsWarn())
	}

	buf.Reset()
	l.SetLevel(hclog.Off)
	l.Error("dropped")
	if got := buf.String(); got != "" {
		t.Errorf("at Off: got %q, want nothing", got)
	}

	// The handler still filters below a permissive SetLevel.
	l2, buf2 := capture(t, slog.LevelInfo)
	l2.SetLevel(hclog.Trace)
	l2.Debug("dropped")
	if got := buf2.String(); got != "" {
		t.Errorf("handler at Info, SetLevel(Trace), Debug: got %q, want nothing", got)
	}
}

func TestStandardLogger(t *testing.T) {
	tests := []struct {
		name string
		opts *hclog.StandardLoggerOptions
		line string
		want string
	}{
		{"nil opts", nil, "[WARN] hello", "level=INFO msg=\"[WARN] hello\"\n"},
		{"infer", &hclog.StandardLoggerOptions{InferLevels: true}, "[WARN] hello", "level=WARN msg=hello\n"},
		{"infer err", &hclog.StandardLoggerOptions{InferLevels: true}, "[ERR] hello", "level=ERROR msg=hello\n"},
		{"infer none", &hclog.StandardLoggerOptions{InferLevels: true}, "hello", "level=INFO msg=hello\n"},
		{"infer timestamp", &hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true},
			"2024/01/02 03:04:05 [DEBUG] hello", "level=DEBUG msg=hello\n"},
		{"force", &hclog.StandardLoggerOptions{ForceLevel: hclog.Error}, "[INFO] hello", "level=ERROR msg=hello\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, buf := capture(t, slog.LevelDebug)
			l.StandardLogger(tt.opts).Print(tt.line)
			if got := buf.String(); got != tt.want {
				t.Errorf("Print(%q): got %q, want %q", tt.line, got, tt.want)
			}
		})
	}

	l, buf := capture(t, slog.LevelInfo)
	w := l.StandardWriter(nil)
	n, err := w.Write([]byte("raw line\n"))
	if err != nil || n != 9 {
		t.Errorf("Write: got %d, %v, want 9, nil", n, err)
	}
	if got, want := buf.String(), "level=INFO msg=\"raw line\"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSource(t *testing.T) {
	var buf bytes.Buffer
	l := raftlog.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{AddSource: true})))
	l.Info("m")
	if got := buf.String(); !strings.Contains(got, "raftlog_test.go:") {
		t.Errorf("got %q, want the source to name raftlog_test.go", got)
	}
}

func TestNilLogger(t *testing.T) {
	l := raftlog.New(nil)
	l.Error("discarded", "k", "v")
	l.StandardLogger(nil).Print("discarded")
	if l.IsError() {
		t.Errorf("IsError on nil logger: got true, want false")
	}
}

func ExampleNew() {
	h := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	l := raftlog.New(slog.New(h)).Named("raft").With("partition", 3)
	l.Info("entering leader state", "term", 7)
	l.Debug("not shown")
	// Output: level=INFO msg="entering leader state" logger=raft partition=3 term=7
}
