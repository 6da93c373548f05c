package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestMedianRatios takes the median of each ratio over the rounds of each
// client count: the middle one of an odd number, the mean of the middle
// two of an even number, and only of the rounds that have the ratio.
func TestMedianRatios(t *testing.T) {
	runs := []comparison{
		{Round: 1, Clients: 1, Ratio: map[string]float64{"acknowledged_per_second": 0.5, "server_cpu_per_post": 3}},
		{Round: 1, Clients: 16, Ratio: map[string]float64{"acknowledged_per_second": 0.2}},
		{Round: 2, Clients: 1, Ratio: map[string]float64{"acknowledged_per_second": 0.9, "server_cpu_per_post": 2}},
		{Round: 2, Clients: 16, Ratio: map[string]float64{"acknowledged_per_second": 0.4}},
		{Round: 3, Clients: 1, Ratio: map[string]float64{"acknowledged_per_second": 0.6}},
		{Round: 3, Clients: 16, Ratio: map[string]float64{"acknowledged_per_second": 0.3}},
	}
	meds := medianRatios(runs)
	if len(meds) != 2 || meds[0].Clients != 1 || meds[1].Clients != 16 {
		t.Fatalf("got %+v, want client counts 1 then 16", meds)
	}
	check := func(i int, k string, want float64) {
		t.Helper()
		if got, ok := meds[i].Ratio[k]; !ok || got != want {
			t.Errorf("clients %d, %s: got %v (%v), want %v", meds[i].Clients, k, got, ok, want)
		}
	}
	check(0, "acknowledged_per_second", 0.6)
	check(0, "server_cpu_per_post", 2.5)
	check(1, "acknowledged_per_second", 0.3)
	if _, ok := meds[1].Ratio["server_cpu_per_post"]; ok || meds[0].Rounds != 3 {
		t.Errorf("clients 16 has a CPU ratio no round had, or clients 1 counts %d rounds, want 3", meds[0].Rounds)
	}
	var b bytes.Buffer
	printMedians(&b, meds, 3)
	if out := b.String(); !strings.Contains(out, "median of 3 rounds") || !strings.Contains(out, "0.60") || !strings.Contains(out, "2.50") {
		t.Errorf("printMedians:\n%s\nwant the rounds and the medians 0.60 and 2.50", out)
	}
}
