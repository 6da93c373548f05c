package cluster

import (
	"fmt"
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
	if err := validRoles(roles); err != nil {
		return nil, err
	}
	return sortRoles(roles), nil
}

// validRoles checks that roles is a non-empty set of known roles.
func validRoles(roles []string) error {
	if len(roles) == 0 {
		return fmt.Errorf("no roles: give one or more of %s", strings.Join(meta.AllRoles, ", "))
	}
	for i, r := range roles {
		if !slices.Contains(meta.AllRoles, r) {
			return fmt.Errorf("unknown role %q: want one or more of %s", r, strings.Join(meta.AllRoles, ", "))
		}
		if slices.Contains(roles[:i], r) {
			return fmt.Errorf("role %q given twice", r)
		}
	}
	return nil
}

// sortRoles returns roles in meta.AllRoles order.
func sortRoles(roles []string) []string {
	var out []string
	for _, r := range meta.AllRoles {
		if slices.Contains(roles, r) {
			out = append(out, r)
		}
	}
	return out
}

// HasRole reports whether the node serves role.
func (n *Node) HasRole(role string) bool { return slices.Contains(n.cfg.Roles, role) }

// Roles returns the roles the node serves, in the metadata's order.
func (n *Node) Roles() []string { return slices.Clone(n.cfg.Roles) }
