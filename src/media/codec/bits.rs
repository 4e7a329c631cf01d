//! Bounds-checked readers for configuration records (bytes) and parameter sets (bits).
//!
//! Both report faults as [`CodecError`] naming the record and the byte offset, so a bad
//! sequence header from an encoder can be located without a hex dump.

use super::CodecError;

/// A byte cursor over one configuration record.
pub(super) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    record: &'static str,
}

impl<'a> ByteReader<'a> {
    pub(super) fn new(data: &'a [u8], record: &'static str) -> Self {
        ByteReader { data, pos: 0, record }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                record: self.record,
                offset: self.pos,
                needed: n,
                have: self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The rest of the record.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }
}

/// An MSB-first bit cursor with Exp-Golomb (H.264 §9.1) and AV1 `uvlc()` (AV1 §4.10.3) codes.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
    record: &'static str,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], record: &'static str) -> Self {
        BitReader { data, pos: 0, record }
    }

    pub(super) fn byte_offset(&self) -> usize {
        self.pos / 8
    }

    fn end(&self) -> CodecError {
        CodecError::BitstreamEnd { record: self.record, bit_offset: self.pos }
    }

    pub(super) fn invalid(&self, field: &'static str, reason: String) -> CodecError {
        CodecError::Invalid { record: self.record, offset: self.byte_offset(), field, reason }
    }

    pub(super) fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = *self.data.get(self.pos / 8).ok_or_else(|| self.end())?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// `n <= 32` bits as an unsigned integer.
    pub(super) fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32, "bits() reads at most 32 bits");
        if self.pos + n as usize > self.data.len() * 8 {
            return Err(self.end());
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v as u32)
    }

    pub(super) fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        if self.pos + n > self.data.len() * 8 {
            return Err(self.end());
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb `ue(v)`; codes longer than 32 bits are refused (no conforming
    /// syntax element needs them, and they would overflow).
    pub(super) fn ue(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(self.invalid(field, "Exp-Golomb code longer than 32 bits".into()));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Signed Exp-Golomb `se(v)`.
    pub(super) fn se(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let k = i64::from(self.ue(field)?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1 `uvlc()`: 32 or more leading zeros mean `u32::MAX`.
    pub(super) fn uvlc(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
        }
        if zeros >= 32 {
            return Ok(u32::MAX);
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }
}

/// NAL unit payload without emulation prevention bytes (`00 00 03` -> `00 00`, H.264 §7.4.1).
pub(crate) fn strip_emulation_prevention(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3; then se(00101) = -2.
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue("a").unwrap(), 0);
        assert_eq!(r.ue("a").unwrap(), 1);
        assert_eq!(r.ue("a").unwrap(), 2);
        assert_eq!(r.ue("a").unwrap(), 3);
        assert_eq!(r.se("a").unwrap(), -2);
        assert!(matches!(r.bits(8), Err(CodecError::BitstreamEnd { .. })));
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(strip_emulation_prevention(&[0, 0, 3, 1, 0, 0, 3, 0, 3]), vec![0, 0, 1, 0, 0, 0, 3]);
    }
}
