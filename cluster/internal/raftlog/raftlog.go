// Package raftlog bridges hashicorp/raft's hclog.Logger to log/slog, so that
// every Raft group logs through the node's *slog.Logger.
//
// Loggers returned by New are safe for concurrent use. Logging never fails:
// handler errors are dropped, as slog.Logger does.
package raftlog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// LevelTrace is the slog level that hclog.Trace records are written at: one
// step below slog.LevelDebug, so handlers at Debug drop them.
const LevelTrace = slog.LevelDebug - 4

// nameKey is the slog attribute that carries the hclog logger name.
const nameKey = "logger"

// New returns an hclog.Logger that writes every record to l. A nil l
// discards everything.
//
// Levels map as Trace→LevelTrace, Debug→slog.LevelDebug, Info→slog.LevelInfo,
// Warn→slog.LevelWarn and Error→slog.LevelError; whether a record is written
// is decided by l's handler and, once SetLevel has been called, by that
// level as well. The logger name (see Named) goes in a "logger" attribute
// ahead of the With arguments and the call's own arguments.
//
// The returned logger and every logger derived from it with With, Named or
// ResetNamed share one level, so SetLevel on any of them affects all.
func New(l *slog.Logger) hclog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &logger{h: l.Handler(), level: new(atomic.Int32)}
}

// logger implements hclog.Logger over an slog.Handler. It is immutable after
// construction except for the shared level, which is atomic.
type logger struct {
	h       slog.Handler
	name    string
	implied []any
	level   *atomic.Int32 // hclog.Level; hclog.NoLevel means no extra filter
}

var _ hclog.Logger = (*logger)(nil)

// slogLevel maps an hclog level to the slog level records are written at.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// enabled reports whether a record at level would be written.
func (l *logger) enabled(level hclog.Level) bool {
	if level == hclog.Off {
		return false
	}
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	if floor := hclog.Level(l.level.Load()); floor != hclog.NoLevel && level < floor {
		return false
	}
	return l.h.Enabled(context.Background(), slogLevel(level))
}

// logAt writes one record. It must be called directly by the exported
// method the caller used, so that the record's source location (skip 3:
// runtime.Callers, logAt, the method) names the caller.
func (l *logger) logAt(level hclog.Level, msg string, args []any) {
	if !l.enabled(level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:])
	r := slog.NewRecord(time.Now(), slogLevel(level), msg, pcs[0])
	if l.name != "" {
		r.AddAttrs(slog.String(nameKey, l.name))
	}
	addArgs(&r, l.implied)
	addArgs(&r, args)
	_ = l.h.Handle(context.Background(), r)
}

// addArgs appends hclog key/value pairs to r. An odd trailing value gets the
// key hclog.MissingKey, as hclog itself does.
func addArgs(r *slog.Record, args []any) {
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			if _, ok := args[i].(hclog.CapturedStacktrace); ok {
				return
			}
			r.AddAttrs(slog.Any(hclog.MissingKey, args[i]))
			return
		}
		r.AddAttrs(slog.Any(argKey(args[i]), value(args[i+1])))
	}
}

// argKey turns an hclog key into a string; keys should be strings already.
func argKey(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return fmt.Sprint(k)
}

// value renders hclog's formatting helper types the way hclog does; other
// values are left for the slog handler.
func value(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		format, ok := v[0].(string)
		if !ok {
			return fmt.Sprint(v...)
		}
		return fmt.Sprintf(format, v[1:]...)
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	default:
		return v
	}
}

// Log implements hclog.Logger.
func (l *logger) Log(level hclog.Level, msg string, args ...any) { l.logAt(level, msg, args) }

// Trace implements hclog.Logger.
func (l *logger) Trace(msg string, args ...any) { l.logAt(hclog.Trace, msg, args) }

// Debug implements hclog.Logger.
func (l *logger) Debug(msg string, args ...any) { l.logAt(hclog.Debug, msg, args) }

// Info implements hclog.Logger.
func (l *logger) Info(msg string, args ...any) { l.logAt(hclog.Info, msg, args) }

// Warn implements hclog.Logger.
func (l *logger) Warn(msg string, args ...any) { l.logAt(hclog.Warn, msg, args) }

// Error implements hclog.Logger.
func (l *logger) Error(msg string, args ...any) { l.logAt(hclog.Error, msg, args) }

// IsTrace implements hclog.Logger.
func (l *logger) IsTrace() bool { return l.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (l *logger) IsDebug() bool { return l.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (l *logger) IsInfo() bool { return l.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (l *logger) IsWarn() bool { return l.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (l *logger) IsError() bool { return l.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger. The returned slice is a copy.
func (l *logger) ImpliedArgs() []any {
	return append([]any(nil), l.implied...)
}

// With implements hclog.Logger. Like hclog, a key given again replaces the
// earlier value.
func (l *logger) With(args ...any) hclog.Logger {
	c := *l
	c.implied = make([]any, 0, len(l.implied)+len(args)+1)
	c.implied = append(c.implied, l.implied...)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			c.implied = append(c.implied, hclog.MissingKey, args[i])
			break
		}
		c.implied = setArg(c.implied, argKey(args[i]), args[i+1])
	}
	return &c
}

// setArg replaces the value of key in kv, or appends the pair.
func setArg(kv []any, key string, val any) []any {
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok && k == key {
			kv[i+1] = val
			return kv
		}
	}
	return append(kv, key, val)
}

// Name implements hclog.Logger.
func (l *logger) Name() string { return l.name }

// Named implements hclog.Logger: the new name is appended to the current
// one with a dot.
func (l *logger) Named(name string) hclog.Logger {
	c := *l
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

// ResetNamed implements hclog.Logger.
func (l *logger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

// SetLevel implements hclog.Logger. Records below level are dropped even if
// the slog handler would accept them; hclog.NoLevel removes the filter and
// hclog.Off drops everything. It affects every logger sharing this one's
// level.
func (l *logger) SetLevel(level hclog.Level) { l.level.Store(int32(level)) }

// GetLevel implements hclog.Logger. It returns the level set by SetLevel, or
// the lowest level the handler accepts if SetLevel was never called.
func (l *logger) GetLevel() hclog.Level {
	if level := hclog.Level(l.level.Load()); level != hclog.NoLevel {
		return level
	}
	for _, level := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if l.h.Enabled(context.Background(), slogLevel(level)) {
			return level
		}
	}
	return hclog.Off
}

// StandardLogger implements hclog.Logger. Lines written to the returned
// *log.Logger are logged at Info unless opts asks otherwise.
func (l *logger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger. Each Write logs one record, at
// Info unless opts asks to infer or force the level; it never fails.
func (l *logger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{
		l:              l,
		infer:          opts.InferLevels,
		inferTimestamp: opts.InferLevelsWithTimestamp,
		force:          opts.ForceLevel,
	}
}

// stdWriter is the io.Writer behind StandardWriter. It is immutable.
type stdWriter struct {
	l              *logger
	infer          bool
	inferTimestamp bool
	force          hclog.Level
}

// timestampPrefix matches characters commonly found in timestamps at the
// start of a line, as hclog's own adapter does.
var timestampPrefix = regexp.MustCompile(`^[\d\s\:\/\.\+-TZ]*`)

// Write logs p as one record and reports len(p), nil.
func (w *stdWriter) Write(p []byte) (int, error) {
	s := string(bytes.TrimRight(p, " \t\n"))
	level := hclog.Info
	switch {
	case w.force != hclog.NoLevel:
		_, s = pickLevel(s)
		level = w.force
	case w.infer:
		if w.inferTimestamp {
			s = s[timestampPrefix.FindStringIndex(s)[1]:]
		}
		level, s = pickLevel(s)
	}
	w.l.logAt(level, s, nil)
	return len(p), nil
}

// pickLevel strips a leading "[LEVEL]" tag from s and returns its level,
// or Info and s unchanged if there is none.
func pickLevel(s string) (hclog.Level, string) {
	for _, t := range []struct {
		tag   string
		level hclog.Level
	}{
		{"[TRACE]", hclog.Trace},
		{"[DEBUG]", hclog.Debug},
		{"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn},
		{"[ERROR]", hclog.Error},
		{"[ERR]", hclog.Error},
	} {
		if rest, ok := strings.CutPrefix(s, t.tag); ok {
			return t.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, s
}
