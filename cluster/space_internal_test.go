package cluster

import (
	"strings"
	"testing"

	clusterv1 "github.com/heraldhq/herald/api/gen/herald/cluster/v1"
)

func TestFormatBytes(t *testing.T) {
	for _, tt := range []struct {
		in   uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{512 << 20, "512 MiB"}, {1 << 30, "1 GiB"}, {8<<30 + 1<<29, "8.5 GiB"},
	} {
		if got := formatBytes(tt.in); got != tt.want {
			t.Errorf("formatBytes(%d): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestStateMaxSize checks that bbolt's hard limit leaves the quota room:
// at least 256 MiB, or a quarter, more.
func TestStateMaxSize(t *testing.T) {
	for _, q := range []int64{1 << 20, 1 << 30, DefaultStateQuota, 64 << 30} {
		got := int64(stateMaxSize(q))
		if got < q+256<<20 || got < q+q/4 {
			t.Errorf("stateMaxSize(%d): got %d, want at least %d more", q, got, max(q/4, 256<<20))
		}
	}
}

func TestJudgeSpace(t *testing.T) {
	st := &clusterv1.SpaceStatus{FreeBytes: 100 << 20, MinFreeBytes: 1 << 30, StateQuotaBytes: 8 << 30,
		Replicas: []*clusterv1.ReplicaSpace{{Partition: 1, StateBytes: 9 << 30}, {Partition: 2, StateBytes: 1 << 30}}}
	tests := []struct {
		name string
		p    uint32
		st   *clusterv1.SpaceStatus
		want string // "" = no refusal
	}{
		{"unknown node", 1, nil, ""},
		{"below the reserve", 2, st, "node n2 has 100 MiB free on its data disk, below its reserve of 1 GiB"},
		{"reserve off", 2, &clusterv1.SpaceStatus{FreeBytes: 1, StateQuotaBytes: 8 << 30}, ""},
		{"over the quota", 1, &clusterv1.SpaceStatus{FreeBytes: 2 << 30, MinFreeBytes: 1 << 30, StateQuotaBytes: 8 << 30,
			Replicas: st.Replicas}, "its state on node n2 holds 9 GiB, over the quota of 8 GiB"},
		{"under the quota", 2, &clusterv1.SpaceStatus{FreeBytes: 2 << 30, MinFreeBytes: 1 << 30, StateQuotaBytes: 8 << 30,
			Replicas: st.Replicas}, ""},
		{"quota off", 1, &clusterv1.SpaceStatus{FreeBytes: 2 << 30, Replicas: st.Replicas}, ""},
	}
	for _, tt := range tests {
		err := judgeSpace(tt.p, "n2", tt.st)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: got %q, want no refusal", tt.name, err.Error())
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want a refusal saying %q", tt.name, err, tt.want)
		}
	}
}
