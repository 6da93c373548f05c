package check

import (
	"fmt"
	"strings"
)

// Verdict is one checker's judgement of a history.
type Verdict struct {
	Checker string `json:"checker"`
	Valid   bool   `json:"valid"`
	// Summary counts what the checker looked at, for logs.
	Summary    string      `json:"summary"`
	Violations []Violation `json:"violations,omitempty"`
}

// Violation is one breach of a guarantee and the records that show it.
type Violation struct {
	What string `json:"what"`
	Ops  []Op   `json:"ops"`
}

func (v Verdict) String() string {
	var b strings.Builder
	state := "valid"
	if !v.Valid {
		state = fmt.Sprintf("INVALID (%d violations)", len(v.Violations))
	}
	fmt.Fprintf(&b, "%s: %s; %s", v.Checker, state, v.Summary)
	for i, x := range v.Violations {
		if i == maxShown {
			fmt.Fprintf(&b, "\n  … %d more", len(v.Violations)-maxShown)
			break
		}
		fmt.Fprintf(&b, "\n  %s", x.What)
		for _, op := range x.Ops {
			fmt.Fprintf(&b, "\n    %s", op)
		}
	}
	return b.String()
}

// maxShown bounds the violations String lists.
const maxShown = 20

// Checker is one check of a history.
type Checker func(History) Verdict

// Checkers are every checker of this package, in the order All runs them.
var Checkers = []Checker{Lost, Duplicates, Order, StaleReads, Indeterminate, Linearizable}

// All runs every checker over h.
func All(h History) []Verdict {
	out := make([]Verdict, 0, len(Checkers))
	for _, c := range Checkers {
		out = append(out, c(h))
	}
	return out
}

// verdict builds a Verdict from its violations.
func verdict(name string, vs []Violation, summary string, args ...any) Verdict {
	return Verdict{Checker: name, Valid: len(vs) == 0, Summary: fmt.Sprintf(summary, args...), Violations: vs}
}
