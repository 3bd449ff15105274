//! Synchronisation primitives that never allocate: futex wait/wake and the
//! FIFO ticket lock that guards CMA's shared core.
