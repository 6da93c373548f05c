package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
	"github.com/heraldhq/herald/cluster/meta"
)

// roleOf returns the role a node needs to answer procedure: Subscribe is
// the gateway's, the admin API the admin's, the rest of the public API the
// edge's.
func roleOf(procedure string) string {
	switch {
	case procedure == heraldv1connect.MessageServiceSubscribeProcedure:
		return meta.RoleGateway
	case strings.HasPrefix(procedure, "/"+heraldv1connect.AdminServiceName+"/"):
		return meta.RoleAdmin
	default:
		return meta.RoleEdge
	}
}

// serves reports whether the node has role.
func (s *Server) serves(role string) bool { return slices.Contains(s.cfg.Roles, role) }

// roleError says that this node does not answer what, and where to go.
func (s *Server) roleError(what, role string) error {
	return fmt.Errorf("this node serves the roles %s, not %s: send %s to a node with the %s role",
		strings.Join(s.cfg.Roles, ", "), role, what, role)
}

// checkRole refuses a Connect call the node has no role for, as
// unimplemented: another node answers it.
func (s *Server) checkRole(spec connect.Spec) error {
	if role := roleOf(spec.Procedure); !s.serves(role) {
		return connect.NewError(connect.CodeUnimplemented, s.roleError(spec.Procedure, role))
	}
	return nil
}

// gatewayOnly serves h (the WebSocket endpoint) on a node with the
// gateway role, and answers 501 elsewhere.
func (s *Server) gatewayOnly(h http.Handler) http.Handler {
	if s.serves(meta.RoleGateway) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, s.roleError("WebSocket connections", meta.RoleGateway).Error(), http.StatusNotImplemented)
	})
}
