use zeroize::Zeroizing;

/// A secret value: the credential itself.
///
/// It has no `Debug`, `Display`, `Clone` or `Serialize`, so it cannot be logged, printed or
/// copied by accident, and its buffer is zeroized when dropped. The only way to read its bytes
/// is [`SecretValue::expose`], a method that `clippy.toml` disallows: each call site needs an
/// `#[expect(clippy::disallowed_methods, reason = "…")]`, so `grep 'reason ='` lists every place
/// a value is touched.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes ownership of `bytes`; they are zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Takes ownership of a zeroizing buffer without copying it.
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes, for the moment they are sealed or injected. Disallowed by clippy outside
    /// sites that say why they need it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}
