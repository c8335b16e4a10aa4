//! Integrity checksums clients send with uploads (`Content-MD5`). MD5 is used here only as
//! the transfer checksum the Blob protocol defines, never for security.
use md5::Digest;

#[derive(Default)]
pub struct Md5(md5::Md5);

impl Md5 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_answer() {
        let mut m = super::Md5::new();
        m.update(b"The quick brown fox ");
        m.update(b"jumps over the lazy dog");
        assert_eq!(hex::encode(m.finish()), "9e107d9d372bb6826bd81d3542a419d6");
    }
}
