//! Shared by the fuzz targets: a tiny, documented input format for the targets that take a
//! sequence of operations rather than one datagram.
//!
//! Deliberately not `arbitrary`: seeds for these targets are written by
//! `fuzz/make_seeds.py` from the project's own test messages, so the byte encoding has to be
//! simple and fixed:
//!
//! - `u8`: one byte; `bool`: one byte, low bit; `u16` / `u32`: big-endian.
//! - `bytes`: a `u16` length, then that many bytes (fewer if the input ends first).
//! - Reading past the end yields zeros / empty slices, so every input is valid.

use std::borrow::Cow;

/// Reads operations out of a fuzz input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16()).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// A length-prefixed string (invalid UTF-8 replaced).
    pub fn str(&mut self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.bytes())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
