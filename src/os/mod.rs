//! The operating-system layer.
