package torture

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/check"
)

// settle waits until every partition's replicas hold byte-identical state
// (AdminService.GetReplicaDigest), and returns the verdict: valid once
// they do, else the partitions that still differ when within is up.
func settle(ctx context.Context, c *procs, within time.Duration) check.Verdict {
	deadline := time.Now().Add(within)
	admin := heraldv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+c.nodes[0].http, connect.WithProtoJSON())
	for {
		differ, checked, err := compareDigests(ctx, admin)
		if err == nil && len(differ) == 0 {
			return check.Verdict{Checker: "replica-digests", Valid: true,
				Summary: fmt.Sprintf("every replica of %d partitions holds the same state", checked)}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			v := check.Verdict{Checker: "replica-digests", Summary: fmt.Sprintf("replicas still differ %v after the heal", within)}
			if err != nil {
				v.Violations = append(v.Violations, check.Violation{What: "could not read the digests: " + err.Error()})
			}
			for _, d := range differ {
				v.Violations = append(v.Violations, check.Violation{What: d})
			}
			return v
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// compareDigests returns a line for each partition whose replicas differ
// (in state or applied index), and how many partitions it compared.
func compareDigests(ctx context.Context, admin heraldv1connect.AdminServiceClient) ([]string, int, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ring, err := admin.GetRing(cctx, &heraldv1.GetRingRequest{})
	if err != nil {
		return nil, 0, err
	}
	var differ []string
	for _, p := range ring.GetPartitions() {
		var first *heraldv1.GetReplicaDigestResponse
		line := fmt.Sprintf("partition %d:", p.GetId())
		same := true
		for _, r := range p.GetReplicas() {
			d, err := admin.GetReplicaDigest(cctx, &heraldv1.GetReplicaDigestRequest{Partition: p.GetId(), NodeId: r.GetNodeId()})
			if err != nil {
				return nil, 0, fmt.Errorf("digest of partition %d on %s: %w", p.GetId(), r.GetNodeId(), err)
			}
			line += fmt.Sprintf(" %s@%d=%s", r.GetNodeId(), d.GetAppliedIndex(), hex.EncodeToString(d.GetSha256())[:12])
			if first == nil {
				first = d
			} else if !bytes.Equal(first.GetSha256(), d.GetSha256()) || first.GetAppliedIndex() != d.GetAppliedIndex() {
				same = false
			}
		}
		if !same {
			differ = append(differ, line)
		}
	}
	return differ, len(ring.GetPartitions()), nil
}
