//! Number parsing and printing the way GitHub's (.NET) expression engine does it.

/// Parses the text of a number with nothing around it: a decimal with optional sign,
/// fraction and exponent (`-2.99e-2`, `.5`, `+1`), `Infinity` with optional sign
/// (case-insensitive), or a `0x` hexadecimal / `0o` octal integer read as a signed 32-bit
/// value (so `0xffffffff` is `-1`, as in the runner). `None` when it is none of these.
pub(crate) fn parse_number_text(s: &str) -> Option<f64> {
    if let Some(hex) = s.strip_prefix("0x") {
        return parse_radix_i32(hex, 16);
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return parse_radix_i32(oct, 8);
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !is_decimal(unsigned) {
        return None;
    }
    s.parse::<f64>().ok()
}

fn parse_radix_i32(digits: &str, radix: u32) -> Option<f64> {
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    // Two's complement wrap like .NET's Int32 hex parsing: 0xffffffff is -1.
    u32::from_str_radix(digits, radix)
        .ok()
        .map(|n| f64::from(n as i32))
}

/// `digits [. digits?] | . digits`, then an optional `e[+-]digits`. Rust's `f64` parser also
/// accepts `inf`, `nan` and friends, which GitHub does not, hence this gate.
fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = count_digits(&b[i..]);
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = count_digits(&b[i..]);
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = count_digits(&b[i..]);
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

fn count_digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// GitHub's string-to-number conversion: surrounding whitespace is ignored, an empty string
/// is 0, anything that is not a number is NaN.
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    parse_number_text(t).unwrap_or(f64::NAN)
}

/// Prints a number like .NET's `ToString("G15", InvariantCulture)`, which is what GitHub's
/// runner does when a number becomes a string: at most 15 significant digits, no trailing
/// zeros, no `.0` on integers, scientific notation (`1.23456789012346E+19`, `1E-07`) when
/// the exponent is below -5 or at least 15; `NaN`, `Infinity`, `-Infinity`; `-0` prints `0`.
pub fn number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    // `{:.14e}` rounds to 15 significant digits: "d.dddddddddddddde<exp>".
    let sci = format!("{:.14e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if n < 0.0 {
        out.push('-');
    }
    if !(-4..15).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    } else if exp >= 0 {
        // exp is in 0..15 here, so the cast is exact.
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(digits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_github_number_forms() {
        assert_eq!(parse_number_text("0xff"), Some(255.0));
        assert_eq!(parse_number_text("0xffffffff"), Some(-1.0));
        assert_eq!(parse_number_text("0o10"), Some(8.0));
        assert_eq!(parse_number_text("-2.99e-2"), Some(-0.0299));
        assert_eq!(parse_number_text(".5"), Some(0.5));
        assert_eq!(parse_number_text("+1"), Some(1.0));
        assert_eq!(parse_number_text("-Infinity"), Some(f64::NEG_INFINITY));
        for bad in [
            "", "-", ".", "1e", "inf", "nan", "NaN", "0x", "-0xff", "0x01p2", "0xFZ", "1.2.3",
            "1_0", "--1",
        ] {
            assert_eq!(parse_number_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn string_conversion() {
        assert_eq!(string_to_number(""), 0.0);
        assert_eq!(string_to_number("   "), 0.0);
        assert_eq!(string_to_number(" 0xff "), 255.0);
        assert_eq!(string_to_number(" -123456.789 "), -123456.789);
        assert!(string_to_number("abc").is_nan());
        assert!(string_to_number(" NaN ").is_nan());
    }

    #[test]
    fn prints_like_dotnet_g15() {
        let cases = [
            (1.0, "1"),
            (1.1, "1.1"),
            (-2.0, "-2"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (-3.25, "-3.25"),
            (255.0, "255"),
            (1234567890.0, "1234567890"),
            (12345678901234567890.0, "1.23456789012346E+19"),
            (0.845_512_408_225_570_1, "0.84551240822557"),
            (0.012, "0.012"),
            (1e-7, "1E-07"),
            (0.0001, "0.0001"),
            (0.00001, "1E-05"),
            (1e15, "1E+15"),
            (999999999999999.0, "999999999999999"),
            (1e100, "1E+100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::MAX, "1.79769313486232E+308"),
            (f64::MIN_POSITIVE, "2.2250738585072E-308"),
        ];
        for (n, want) in cases {
            assert_eq!(number_to_string(n), want, "{n}");
        }
    }
}
