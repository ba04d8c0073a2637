//! The primitives every encoding here is built from: a growing writer and a
//! bounds-checked reader that never panics on what it is given.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

pub(crate) struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer {
            buf: BytesMut::new(),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.put_i64_le(v);
    }

    /// A length or count. u64, so that no length is ever truncated.
    pub(crate) fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.put_slice(v);
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    /// How many bytes are written so far.
    pub(crate) fn position(&self) -> usize {
        self.buf.len()
    }

    /// The bytes written from `from` on.
    pub(crate) fn written_since(&self, from: usize) -> &[u8] {
        self.buf.get(from..).unwrap_or_default()
    }

    /// Overwrites the u64 written at `at` (a length known only later).
    pub(crate) fn set_u64_at(&mut self, at: usize, v: u64) {
        if let Some(slot) = self.buf.get_mut(at..at + 8) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
    }

    pub(crate) fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

pub(crate) struct Reader<'a> {
    data: &'a [u8],
    /// The input is in the first format, without lease fields (commands and
    /// replies of version 1, snapshots up to version 3): they read as 0.
    pub(crate) legacy: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            legacy: false,
        }
    }

    /// A lease id where the format has one; 0 in the legacy format.
    pub(crate) fn lease(&mut self) -> Result<i64, DecodeError> {
        if self.legacy {
            Ok(0)
        } else {
            self.i64()
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.data.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .data
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.data = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBool(b)),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A length or count, refused above `max`.
    pub(crate) fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(DecodeError::TooLong {
                what,
                len: n,
                max: max as u64,
            }),
        }
    }

    /// An empty vector with room for `count` items of `T`, but never for
    /// more bytes than the input has left: each item takes at least one
    /// byte, so a count larger than the input is a lie, and an item in
    /// memory can be far larger than its encoding (a key-value pair is 88
    /// bytes). Beyond that the vector grows as items really decode.
    pub(crate) fn vec_for<T>(&self, count: usize) -> Vec<T> {
        let fits = self.data.len() / std::mem::size_of::<T>().max(1);
        Vec::with_capacity(count.min(fits))
    }

    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        let n = self.len(what, max)?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    pub(crate) fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let n = self.len(what, max)?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8(what))
    }

    /// Refuses input left over after a complete value.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.data.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}
