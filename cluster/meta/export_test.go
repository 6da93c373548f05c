package meta

// ForceSnapshot makes g's Raft instance take a snapshot now.
func ForceSnapshot(g *Group) error { return g.raft.Snapshot().Error() }
