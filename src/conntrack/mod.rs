//! Connection tracking.

pub mod table;
