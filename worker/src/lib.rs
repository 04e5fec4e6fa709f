//! The worker library (being written).
