package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/heraldhq/herald/cmd/herald/internal/loopback"
)

// CentrifugoTarget says how to reach the Centrifugo nodes a fan-out run
// measures (FanoutOptions.Centrifugo).
type CentrifugoTarget struct {
	// APIKey is the key of its HTTP API (http_api.key).
	APIKey string
}

// Centrifugo is one centrifugo process on loopback, with the memory
// engine: anonymous clients may subscribe to any channel (client.insecure),
// and every channel keeps a history with offsets (force_positioning), so
// that publications carry a seq to check as Herald's events do.
type Centrifugo struct {
	Addr   string
	APIKey string
	cmd    *exec.Cmd
}

// centrifugoKey is the HTTP API key of the node StartCentrifugo starts.
const centrifugoKey = "herald-bench"

// StartCentrifugo starts binary with its config and log in dir and waits
// until it answers its health check.
func StartCentrifugo(ctx context.Context, binary, dir string) (*Centrifugo, error) {
	ports, err := loopback.FreePorts(1)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(ports[0])
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`{
  "http_server": {"address": %q, "port": %s},
  "log": {"level": "error"},
  "client": {"insecure": true, "allowed_origins": ["*"]},
  "http_api": {"key": %q},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true},
  "channel": {"without_namespace": {"history_size": 100000, "history_ttl": "3600s", "force_positioning": true}}
}
`, host, port, centrifugoKey)
	path := filepath.Join(dir, "centrifugo.json")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "centrifugo.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "--config", path)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("bench: start %s: %w", binary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(exited) }()
	c := &Centrifugo{Addr: ports[0], APIKey: centrifugoKey, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.Addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("bench: %s exited at start; its log is %s", binary, filepath.Join(dir, "centrifugo.log"))
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("bench: %s did not answer /health within 30 s; its log is %s", binary, filepath.Join(dir, "centrifugo.log"))
		}
	}
}

// PID returns the process id.
func (c *Centrifugo) PID() int { return c.cmd.Process.Pid }

// Stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (c *Centrifugo) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(c.cmd.Process.Pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = c.cmd.Process.Kill()
}

// centrifugoSystem is Centrifugo, measured as Herald is: posts are
// publications through its HTTP API (POST /api/publish, JSON, one at a
// time or at the rate), subscribers its JSON protocol over WebSocket.
type centrifugoSystem struct{ t *CentrifugoTarget }

// createChannels does nothing: Centrifugo's channels exist once used.
func (centrifugoSystem) createChannels(context.Context, []string, []string) error { return nil }

func (s centrifugoSystem) poster(c *http.Client, addr string) fanPoster {
	return &centrifugoPoster{c: c, url: "http://" + addr + "/api/publish", key: s.t.APIKey}
}

func (centrifugoSystem) subscriber(f *fanout, channel int) member {
	return &cfSubscriber{f: f, channel: channel}
}

func (centrifugoSystem) setup(bool) (string, string) {
	return "Centrifugo HTTP API publishes (JSON)", "Centrifugo JSON protocol"
}

type centrifugoPoster struct {
	c        *http.Client
	url, key string
}

// cfPublish is the body of a publish request: the post's id and text as
// its data, as a Herald event carries them.
type cfPublish struct {
	Channel string `json:"channel"`
	Data    cfData `json:"data"`
}

type cfData struct {
	ID   string `json:"id"`
	Text string `json:"text,omitempty"`
}

func (p *centrifugoPoster) post(ctx context.Context, channel, text, id string) (uint64, string, error) {
	body, err := json.Marshal(cfPublish{Channel: channel, Data: cfData{ID: id, Text: text}})
	if err != nil {
		return 0, "encode", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, "request", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", p.key)
	resp, err := p.c.Do(req)
	if err != nil {
		return 0, "unavailable", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "unavailable", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Sprintf("http %d", resp.StatusCode), fmt.Errorf("bench: publish: HTTP %d: %s", resp.StatusCode, b)
	}
	var out struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Result struct {
			Offset uint64 `json:"offset"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, "undecodable", fmt.Errorf("bench: publish: %w", err)
	}
	if out.Error != nil {
		return 0, fmt.Sprintf("error %d", out.Error.Code), fmt.Errorf("bench: publish: %s", out.Error.Message)
	}
	if out.Result.Offset == 0 {
		return 0, "no offset", fmt.Errorf("bench: publish: no offset in %s (is the channel's history on?)", b)
	}
	return out.Result.Offset, "", nil
}
