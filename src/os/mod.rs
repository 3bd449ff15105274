//! The operating-system layer: memory mappings, errno, the environment,
//! randomness and raw writes to stderr. Nothing here allocates.

pub mod clock;
pub mod cpus;
pub mod decommit_batch;
pub mod env;
pub mod errno;
pub mod mmap;
pub mod random;
pub mod stderr;
