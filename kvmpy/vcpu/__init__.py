"""vCPU state, the dispatch loop and the PVM completions."""
