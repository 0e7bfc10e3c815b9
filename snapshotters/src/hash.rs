//! SHA-256 for the hot paths (layer and blob digests): ring's assembly implementation, about
//! twice as fast as a portable one on CPUs without SHA extensions.

#[derive(Clone)]
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Lowercase hex of the digest so far (the context is not consumed).
    pub fn hex(&self) -> String {
        hex::encode(self.0.clone().finish().as_ref())
    }

    /// `sha256:<hex>` of the digest so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        let mut h = Sha256::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(
            h.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
