package seglog

import "fmt"

// Config says where and how to open the log.
type Config struct {
	// Dir holds the segment files; it is created if missing.
	Dir string
	// SegmentSize is the size past which the flusher starts a new segment;
	// 0 means 64 MiB. A single write larger than it still goes into one
	// segment.
	SegmentSize int64
}

// DefaultConfig returns the defaults for the log in dir.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, SegmentSize: 64 << 20}
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("seglog: Config.Dir is required")
	}
	if c.SegmentSize < 0 {
		return fmt.Errorf("seglog: Config.SegmentSize %d is negative", c.SegmentSize)
	}
	return nil
}
