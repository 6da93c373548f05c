package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/cmd/herald/internal/bench"
)

// centrifugoBinary returns the centrifugo program to start: flag if set,
// else one on PATH or in $(go env GOPATH)/bin; an error says how to get one.
func centrifugoBinary(flag string) (string, error) {
	if flag == "" {
		flag = findBinary("centrifugo")
	}
	if flag == "" {
		return "", errors.New("no centrifugo found on PATH or in $(go env GOPATH)/bin: install one with " +
			"\"go install github.com/centrifugal/centrifugo/v6@v6.9.1\", or pass --centrifugo-server")
	}
	path, err := exec.LookPath(flag)
	if err != nil {
		return "", fmt.Errorf("--centrifugo-server: %w", err)
	}
	return path, nil
}

// runCentrifugoFanout runs o's load against one Centrifugo node it starts
// from binary and stops after.
func runCentrifugoFanout(cmd *cobra.Command, o bench.FanoutOptions, binary string) (*bench.FanoutResult, error) {
	dir, err := os.MkdirTemp("", "herald-bench-centrifugo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(cmd.ErrOrStderr(), "starting centrifugo (%s) in %s ...\n", binary, dir)
	c, err := bench.StartCentrifugo(cmd.Context(), binary, dir)
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	o.Targets, o.PIDs = []string{c.Addr}, []int{c.PID()}
	o.Centrifugo = &bench.CentrifugoTarget{APIKey: c.APIKey}
	o.Prefix = fmt.Sprintf("fanout-%d", time.Now().Unix())
	return bench.RunFanout(cmd.Context(), o)
}

// fanoutComparison is what --centrifugo --json prints.
type fanoutComparison struct {
	Herald     *bench.FanoutResult `json:"herald"`
	Centrifugo *bench.FanoutResult `json:"centrifugo"`
	// Ratios are Herald's figures over Centrifugo's.
	Ratios map[string]float64 `json:"herald_over_centrifugo"`
}

func fanoutRatios(h, c *bench.FanoutResult) map[string]float64 {
	r := map[string]float64{}
	setRatio(r, "deliveries_per_second", h.DeliveriesPerSecond, c.DeliveriesPerSecond)
	setRatio(r, "latency_p50", h.Latency.P50, c.Latency.P50)
	setRatio(r, "latency_p99", h.Latency.P99, c.Latency.P99)
	if h.CPUSecondsPerMillion != nil && c.CPUSecondsPerMillion != nil {
		setRatio(r, "cpu_per_delivery", *h.CPUSecondsPerMillion, *c.CPUSecondsPerMillion)
	}
	return r
}

func reportFanoutComparison(cmd *cobra.Command, h, c *bench.FanoutResult, asJSON bool) error {
	r := fanoutRatios(h, c)
	w := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(fanoutComparison{Herald: h, Centrifugo: c, Ratios: r}); err != nil {
			return err
		}
	} else {
		bench.PrintFanout(w, "herald bench fanout (herald)", h)
		bench.PrintFanout(w, "herald bench fanout (centrifugo)", c)
		fmt.Fprintf(w, "herald / centrifugo: deliveries/s %s, latency p50 %s, p99 %s, server CPU per delivery %s\n",
			ratioOpt(r, "deliveries_per_second"), ratioOpt(r, "latency_p50"), ratioOpt(r, "latency_p99"), ratioOpt(r, "cpu_per_delivery"))
	}
	var errs []error
	for _, run := range []struct {
		name string
		res  *bench.FanoutResult
	}{{"herald", h}, {"centrifugo", c}} {
		if err := violationsError(run.res.Violations); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", run.name, err))
		}
	}
	return errors.Join(errs...)
}
