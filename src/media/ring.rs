//! FrameRing (being written).
pub struct FrameRing;
pub struct RingReader;
pub struct RingWriter;
pub struct Lagged;
