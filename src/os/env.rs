//! Reading settings from the environment without allocating.

use core::ffi::{CStr, c_char};

/// Returns the value of environment variable `name` (NUL-terminated), or
/// None. Uses getenv(3), which does not allocate; safe before main.
pub fn get(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a pointer to a
    // NUL-terminated string that lives as long as the environment entry.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        None
    } else {
        // SAFETY: non-null result of getenv is a valid C string.
        Some(unsafe { CStr::from_ptr(value) }.to_bytes())
    }
}

/// Parses a decimal unsigned number with an optional k/m/g suffix (powers of
/// 1024). Returns None for anything else.
pub fn parse_size(text: &[u8]) -> Option<usize> {
    let (digits, multiplier) = match text.last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1usize << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1usize << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1usize << 30),
        _ => (text, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    value.checked_mul(multiplier)
}

/// Parses a boolean: 1/0, true/false, yes/no, on/off (case-insensitive).
pub fn parse_bool(text: &[u8]) -> Option<bool> {
    let mut lower = [0u8; 8];
    if text.len() > lower.len() {
        return None;
    }
    for (dst, src) in lower.iter_mut().zip(text) {
        *dst = src.to_ascii_lowercase();
    }
    match &lower[..text.len()] {
        b"1" | b"true" | b"yes" | b"on" => Some(true),
        b"0" | b"false" | b"no" | b"off" => Some(false),
        _ => None,
    }
}

/// Calls `visit` with the name (before '=') of every environment variable
/// that starts with `prefix`. Reads `environ` directly; no allocation.
pub fn for_each_name_with_prefix(prefix: &[u8], mut visit: impl FnMut(&[u8])) {
    unsafe extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: `environ` is the C library's environment array (possibly null
    // very early); entries are NUL-terminated strings, the array ends at null.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let bytes = CStr::from_ptr(*entry).to_bytes();
            if bytes.starts_with(prefix) {
                let name_len = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
                visit(&bytes[..name_len]);
            }
            entry = entry.add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_bool, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b"1g"), Some(1 << 30));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"k"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool(b"1"), Some(true));
        assert_eq!(parse_bool(b"ON"), Some(true));
        assert_eq!(parse_bool(b"no"), Some(false));
        assert_eq!(parse_bool(b"maybe"), None);
        assert_eq!(parse_bool(b"truetruetrue"), None);
    }
}
