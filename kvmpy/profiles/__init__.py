"""Machine recipes: which devices go where, wired to which interrupts."""
