package partition

// SetProposeHook makes Propose call fn after its leadership check and
// before it hands the command to Raft, or stops that with nil. Tests use
// it to hold proposals at that point and force an interleaving that load
// produces only now and then.
func SetProposeHook(p *Partition, fn func()) {
	if fn == nil {
		p.proposeHook.Store(nil)
		return
	}
	p.proposeHook.Store(&fn)
}
