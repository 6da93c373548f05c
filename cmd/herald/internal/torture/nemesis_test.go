package torture

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// TestTransferWithNobodyToAsk runs a leadership transfer when the run has
// ended and no node is running: it must say it found no replica, not
// panic. Before, admin returned nil without having asked anyone, and the
// transfer drew a node from an empty list (a crash at the end of a 2,000-
// subscriber run).
func TestTransferWithNobodyToAsk(t *testing.T) {
	m := &nemesis{c: &procs{nodes: []*proc{{id: "n1", http: "127.0.0.1:1"}}}, rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if note := m.transfer(ctx, 0); !strings.Contains(note, "no replica to move the leadership to") {
		t.Errorf("transfer with a cancelled context and no running node: %q, want it to say it found no replica", note)
	}
	err := m.admin(ctx, func(context.Context, heraldv1connect.AdminServiceClient) error { return nil })
	if err == nil {
		t.Errorf("admin with a cancelled context: got nil, want an error: the call never ran")
	}
}
