//! Siphon's media layer (arrives with the media-engine issue).
