package meta

import (
	"slices"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// The roles a node serves, as the metadata records them (Node.roles).
// Only RoleChannel matters to the metadata: placement puts replicas on
// nodes with it. The others say which of the public APIs a node answers.
const (
	RoleEdge    = "edge"    // the public Connect API: channels, posts, history
	RoleAdmin   = "admin"   // the admin API
	RoleChannel = "channel" // replicas of partitions: the channels' history
	RoleGateway = "gateway" // WebSockets and Subscribe streams
)

// AllRoles lists every role, in the order nodes record them.
var AllRoles = []string{RoleEdge, RoleAdmin, RoleChannel, RoleGateway}

// HoldsReplicas reports whether placement may put replicas on node: it has
// the channel role, or records no roles (a node from before roles).
func HoldsReplicas(node *heraldv1.Node) bool {
	roles := node.GetRoles()
	return len(roles) == 0 || slices.Contains(roles, RoleChannel)
}
