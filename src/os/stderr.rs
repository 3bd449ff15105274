//! Writing diagnostics without allocating: a fixed-size line buffer with
//! decimal and hexadecimal formatting, flushed with one write(2) to fd 2.

/// A line of at most `CAP` bytes built on the stack. Text beyond the
/// capacity is dropped, never an error.
pub struct Line {
    buf: [u8; Line::CAP],
    len: usize,
}

impl Line {
    pub const CAP: usize = 1024;

    pub const fn new() -> Line {
        Line {
            buf: [0; Line::CAP],
            len: 0,
        }
    }

    pub fn str(&mut self, s: &str) -> &mut Line {
        self.bytes(s.as_bytes())
    }

    pub fn bytes(&mut self, s: &[u8]) -> &mut Line {
        for &b in s {
            if self.len == Line::CAP {
                break;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        self
    }

    /// Appends `value` in decimal.
    pub fn dec(&mut self, value: u64) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut n = value;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// Appends `value` as `0x` followed by lowercase hex digits.
    pub fn hex(&mut self, value: usize) -> &mut Line {
        let mut digits = [0u8; 18];
        let mut n = value;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        i -= 1;
        digits[i] = b'x';
        i -= 1;
        digits[i] = b'0';
        self.bytes(&digits[i..])
    }

    /// Appends a space and `value` in decimal (`key value` reports).
    pub fn num(&mut self, value: u64) -> &mut Line {
        self.str(" ").dec(value)
    }

    /// Ends the line with a NUL (overwriting the last byte if full), for C.
    pub fn nul_terminated(&mut self) -> &Line {
        if self.len == Line::CAP {
            self.len -= 1;
        }
        self.buf[self.len] = 0;
        self.len += 1;
        self
    }

    /// The line as a C string (after `nul_terminated`).
    pub fn as_c_str(&self) -> &core::ffi::CStr {
        core::ffi::CStr::from_bytes_until_nul(self.as_bytes()).unwrap_or(c"")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line to stderr (fd 2), retrying on short writes and EINTR.
    pub fn write_to_stderr(&self) {
        write_all(2, self.as_bytes());
    }
}

impl Default for Line {
    fn default() -> Line {
        Line::new()
    }
}

/// Writes all of `bytes` to `fd`, ignoring errors other than EINTR (there is
/// nowhere left to report them). errno is preserved.
pub fn write_all(fd: i32, bytes: &[u8]) {
    let _errno = crate::os::errno::ErrnoGuard::save();
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid byte slice for the duration of the call.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && crate::os::errno::get() == libc::EINTR {
            continue;
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn formats_numbers() {
        let mut line = Line::new();
        line.str("a=")
            .dec(0)
            .str(" b=")
            .dec(1234567890)
            .str(" p=")
            .hex(0xdeadbeef)
            .str(" z=")
            .hex(0);
        assert_eq!(line.as_bytes(), b"a=0 b=1234567890 p=0xdeadbeef z=0x0");
    }

    #[test]
    fn truncates_at_capacity() {
        let mut line = Line::new();
        for _ in 0..Line::CAP {
            line.str("xy");
        }
        assert_eq!(line.as_bytes().len(), Line::CAP);
    }
}
