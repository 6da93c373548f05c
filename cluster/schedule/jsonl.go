package schedule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The JSON lines: the first holds the config, each further line one
// fault. Times are whole milliseconds.
type configLine struct {
	Seed       int64    `json:"seed"`
	Nodes      []string `json:"nodes"`
	Partitions uint32   `json:"partitions"`
	DurationMS int64    `json:"duration_ms"`
	Kinds      []Kind   `json:"kinds"`
}

type faultLine struct {
	AtMS      int64    `json:"at_ms"`
	Kind      Kind     `json:"kind"`
	Nodes     []string `json:"nodes,omitempty"`
	Partition uint32   `json:"partition,omitempty"`
	ForMS     int64    `json:"for_ms"`
	DelayMS   int64    `json:"delay_ms,omitempty"`
}

// WriteJSONL writes s to w as JSON lines.
func WriteJSONL(w io.Writer, s Schedule) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	c := s.Config
	if err := enc.Encode(configLine{Seed: c.Seed, Nodes: c.Nodes, Partitions: c.Partitions,
		DurationMS: c.Duration.Milliseconds(), Kinds: c.Kinds}); err != nil {
		return fmt.Errorf("encode schedule config: %w", err)
	}
	for _, f := range s.Faults {
		if err := enc.Encode(faultLine{AtMS: f.At.Milliseconds(), Kind: f.Kind, Nodes: f.Nodes, Partition: f.Partition,
			ForMS: f.For.Milliseconds(), DelayMS: f.Delay.Milliseconds()}); err != nil {
			return fmt.Errorf("encode fault %s: %w", f, err)
		}
	}
	return bw.Flush()
}

// ReadJSONL reads a schedule that WriteJSONL wrote and checks it (see
// Schedule.Check).
func ReadJSONL(r io.Reader) (Schedule, error) {
	var s Schedule
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			var c configLine
			if err := strictUnmarshal(sc.Bytes(), &c); err != nil {
				return Schedule{}, fmt.Errorf("schedule line 1 (seed, nodes, duration_ms …): %w", err)
			}
			s.Config = Config{Seed: c.Seed, Nodes: c.Nodes, Partitions: c.Partitions,
				Duration: time.Duration(c.DurationMS) * time.Millisecond, Kinds: c.Kinds}
			continue
		}
		var f faultLine
		if err := strictUnmarshal(sc.Bytes(), &f); err != nil {
			return Schedule{}, fmt.Errorf("schedule line %d (a fault): %w", line, err)
		}
		s.Faults = append(s.Faults, Fault{At: time.Duration(f.AtMS) * time.Millisecond, Kind: f.Kind, Nodes: f.Nodes,
			Partition: f.Partition, For: time.Duration(f.ForMS) * time.Millisecond, Delay: time.Duration(f.DelayMS) * time.Millisecond})
	}
	if err := sc.Err(); err != nil {
		return Schedule{}, fmt.Errorf("read schedule: %w", err)
	}
	if line == 0 {
		return Schedule{}, errors.New("schedule: empty input: the first line must hold seed, nodes and duration_ms")
	}
	if err := s.Check(); err != nil {
		return Schedule{}, err
	}
	return s, nil
}

// strictUnmarshal decodes one line, refusing fields it does not know.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
