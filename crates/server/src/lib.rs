//! Siphon's async server.
