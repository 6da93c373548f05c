package cluster

import (
	"slices"
	"strings"

	"github.com/heraldhq/herald/cluster/meta"
)

// ParseRoles reads a comma-separated list of roles (edge, admin, channel,
// gateway), as `herald server --roles` takes it, and returns them in the
// order the metadata records them. "all" means every role.
func ParseRoles(s string) ([]string, error) {
	if strings.TrimSpace(s) == "all" {
		return slices.Clone(meta.AllRoles), nil
	}
	var roles []string
	for r := range strings.SplitSeq(s, ",") {
		r = strings.TrimSpace(r)
		if r != "" {
			roles = append(roles, r)
		}
	}
	if err := meta.CheckRoles(roles); err != nil {
		return nil, err
	}
	return meta.SortRoles(roles), nil
}

// Roles returns the roles the node serves, in the metadata's order.
func (n *Node) Roles() []string { return slices.Clone(n.cfg.Roles) }
