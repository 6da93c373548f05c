package meta

import (
	"fmt"
	"slices"
	"strings"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// The roles a node serves, as the metadata records them (Node.roles).
// Only RoleChannel matters to the metadata: placement puts replicas on
// nodes with it, and the metadata group's voters are nodes with it when
// there are enough. The others say which of the public APIs a node
// answers.
const (
	RoleEdge    = "edge"    // the public Connect API: channels, posts, history
	RoleAdmin   = "admin"   // the admin API
	RoleChannel = "channel" // replicas of partitions: the channels' history
	RoleGateway = "gateway" // WebSockets and Subscribe streams
)

// AllRoles lists every role, in the order nodes record them.
var AllRoles = []string{RoleEdge, RoleAdmin, RoleChannel, RoleGateway}

// HasRole reports whether node serves role: it records it, or records no
// roles at all (a node from before roles, which serves every role).
func HasRole(node *heraldv1.Node, role string) bool {
	roles := node.GetRoles()
	return len(roles) == 0 || slices.Contains(roles, role)
}

// HoldsReplicas reports whether placement may put replicas on node: it has
// the channel role.
func HoldsReplicas(node *heraldv1.Node) bool { return HasRole(node, RoleChannel) }

// CheckRoles checks that roles is a non-empty set of known roles.
func CheckRoles(roles []string) error {
	if len(roles) == 0 {
		return fmt.Errorf("no roles: give one or more of %s", strings.Join(AllRoles, ", "))
	}
	for i, r := range roles {
		if !slices.Contains(AllRoles, r) {
			return fmt.Errorf("unknown role %q: want one or more of %s", r, strings.Join(AllRoles, ", "))
		}
		if slices.Contains(roles[:i], r) {
			return fmt.Errorf("role %q given twice", r)
		}
	}
	return nil
}

// SortRoles returns roles in AllRoles order.
func SortRoles(roles []string) []string {
	var out []string
	for _, r := range AllRoles {
		if slices.Contains(roles, r) {
			out = append(out, r)
		}
	}
	return out
}
