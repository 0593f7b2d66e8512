//! (arrives with its implementation)
