//! S7 addresses in the syntax engineers type (`DB1.DBX0.0`, `MW10`, `I0.0`/`E0.0`,
//! `QB4`/`AB4` ...) and the data types stored at them.

use edge_driver_api::time::days_from_civil;
use std::fmt;

/// A memory area of the PLC, with its S7 protocol code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// Process inputs (`I`, German `E`).
    Inputs,
    /// Process outputs (`Q`, German `A`).
    Outputs,
    /// Flags / bit memory (`M`).
    Flags,
    /// A data block.
    Db(u16),
}

impl Area {
    /// The area byte of an S7ANY item.
    pub fn code(self) -> u8 {
        match self {
            Area::Inputs => 0x81,
            Area::Outputs => 0x82,
            Area::Flags => 0x83,
            Area::Db(_) => 0x84,
        }
    }
    /// The DB number of an S7ANY item (0 outside data blocks).
    pub fn db(self) -> u16 {
        match self {
            Area::Db(n) => n,
            _ => 0,
        }
    }
    /// Decodes an area from an S7ANY item (used by servers and the test fake).
    pub fn from_code(code: u8, db: u16) -> Option<Area> {
        Some(match code {
            0x81 => Area::Inputs,
            0x82 => Area::Outputs,
            0x83 => Area::Flags,
            0x84 => Area::Db(db),
            _ => return None,
        })
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Inputs => f.write_str("I"),
            Area::Outputs => f.write_str("Q"),
            Area::Flags => f.write_str("M"),
            Area::Db(n) => write!(f, "DB{n}"),
        }
    }
}

/// The access width written in an address (`X`, `B`, `W`, `D`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Bit,
    Byte,
    Word,
    DWord,
}

/// A parsed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub area: Area,
    /// Byte offset in the area.
    pub byte: u32,
    /// Bit number (0–7) for bit addresses, else 0.
    pub bit: u8,
    pub width: Width,
}

/// Largest byte offset an S7ANY item can address (the bit address has 24 bits).
pub const MAX_BYTE: u32 = (1 << 21) - 1;

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = match self.width {
            Width::Bit => "X",
            Width::Byte => "B",
            Width::Word => "W",
            Width::DWord => "D",
        };
        match (self.area, self.width) {
            (Area::Db(n), Width::Bit) => write!(f, "DB{n}.DBX{}.{}", self.byte, self.bit),
            (Area::Db(n), _) => write!(f, "DB{n}.DB{w}{}", self.byte),
            (a, Width::Bit) => write!(f, "{a}{}.{}", self.byte, self.bit),
            (a, _) => write!(f, "{a}{w}{}", self.byte),
        }
    }
}

impl Address {
    /// Parses `DB1.DBX0.0`, `DB1.DBB1`, `DB1.DBW2`, `DB1.DBD4`, `M0.1`, `MB5`, `MW10`,
    /// `MD20`, `I0.0`/`E0.0`, `IB0`/`EB0`, `IW`, `ID`, `Q0.0`/`A0.0`, `QB`/`AB`, `QW`/`AW`,
    /// `QD`/`AD` (case-insensitive). The error says what is wrong in words.
    pub fn parse(s: &str) -> Result<Address, String> {
        let t = s.trim().to_ascii_uppercase();
        if t.is_empty() {
            return Err("the address is empty".into());
        }
        if let Some(rest) = t.strip_prefix("DB") {
            let (num, rest) = rest
                .split_once('.')
                .ok_or_else(|| format!("`{s}`: a DB address looks like DB1.DBW2 or DB1.DBX0.0"))?;
            let db: u16 = num
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{s}`: `{num}` is not a DB number (1–65535)"))?;
            let rest = rest.strip_prefix("DB").ok_or_else(|| {
                format!("`{s}`: after `DB{db}.` comes DBX, DBB, DBW or DBD (e.g. DB{db}.DBW2)")
            })?;
            return parse_offset(s, Area::Db(db), rest, true);
        }
        let (area, rest) = match t.as_bytes()[0] {
            b'M' => (Area::Flags, &t[1..]),
            b'I' | b'E' => (Area::Inputs, &t[1..]),
            b'Q' | b'A' => (Area::Outputs, &t[1..]),
            _ => {
                return Err(format!(
                    "`{s}`: unknown area; use DB<n>.DB…, M…, I… (E…) or Q… (A…)"
                ));
            }
        };
        parse_offset(s, area, rest, false)
    }

    /// The first byte and the number of bytes a value of `ty` at this address spans.
    pub fn byte_range(&self, ty: DataType) -> (u32, u32) {
        (self.byte, ty.size())
    }
}

fn parse_offset(orig: &str, area: Area, rest: &str, db: bool) -> Result<Address, String> {
    let (width, digits) = match rest.as_bytes().first() {
        Some(b'X') => (Width::Bit, &rest[1..]),
        Some(b'B') => (Width::Byte, &rest[1..]),
        Some(b'W') => (Width::Word, &rest[1..]),
        Some(b'D') => (Width::DWord, &rest[1..]),
        Some(c) if c.is_ascii_digit() && !db => (Width::Bit, rest),
        _ => {
            return Err(format!(
                "`{orig}`: expected X (bit), B (byte), W (word) or D (double word) before the offset"
            ));
        }
    };
    let (byte_s, bit_s) = match digits.split_once('.') {
        Some((b, bit)) => (b, Some(bit)),
        None => (digits, None),
    };
    let byte: u32 = byte_s
        .parse()
        .ok()
        .filter(|b| *b <= MAX_BYTE)
        .ok_or_else(|| format!("`{orig}`: `{byte_s}` is not a byte offset (0–{MAX_BYTE})"))?;
    let bit = match (width, bit_s) {
        (Width::Bit, Some(b)) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= 7)
            .ok_or_else(|| format!("`{orig}`: bit number `{b}` is not 0–7"))?,
        (Width::Bit, None) => {
            return Err(format!(
                "`{orig}`: a bit address needs `.bit`, e.g. {area}{byte}.0"
            ));
        }
        (_, Some(_)) => {
            return Err(format!(
                "`{orig}`: only bit addresses (X) take a `.bit` suffix"
            ));
        }
        (_, None) => 0,
    };
    Ok(Address {
        area,
        byte,
        bit,
        width,
    })
}

/// S7 data types (as in TIA Portal / STEP 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Bool,
    Byte,
    Char,
    SInt,
    USInt,
    Word,
    UInt,
    Int,
    DWord,
    UDInt,
    DInt,
    Real,
    LReal,
    /// IEC TIME: signed milliseconds in 32 bits.
    Time,
    /// S7 STRING with room for `n` characters (2 header bytes + n).
    String(u8),
    /// DATE_AND_TIME: 8 BCD bytes.
    DateAndTime,
}

/// Names accepted for `type` (STRING takes its length from `length`).
pub const TYPE_NAMES: &[&str] = &[
    "BOOL",
    "BYTE",
    "CHAR",
    "SINT",
    "USINT",
    "WORD",
    "UINT",
    "INT",
    "DWORD",
    "UDINT",
    "DINT",
    "REAL",
    "LREAL",
    "TIME",
    "STRING",
    "DATE_AND_TIME",
    "DT",
];

impl DataType {
    /// Parses a type name; `string_len` is the declared STRING length (default 254).
    pub fn parse(name: &str, string_len: Option<u8>) -> Option<DataType> {
        Some(match name.trim().to_ascii_uppercase().as_str() {
            "BOOL" => DataType::Bool,
            "BYTE" => DataType::Byte,
            "CHAR" => DataType::Char,
            "SINT" => DataType::SInt,
            "USINT" => DataType::USInt,
            "WORD" => DataType::Word,
            "UINT" => DataType::UInt,
            "INT" => DataType::Int,
            "DWORD" => DataType::DWord,
            "UDINT" => DataType::UDInt,
            "DINT" => DataType::DInt,
            "REAL" => DataType::Real,
            "LREAL" => DataType::LReal,
            "TIME" => DataType::Time,
            "STRING" => DataType::String(string_len.unwrap_or(254)),
            "DATE_AND_TIME" | "DT" => DataType::DateAndTime,
            _ => return None,
        })
    }

    /// The STEP 7 name of the type.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Byte => "BYTE",
            DataType::Char => "CHAR",
            DataType::SInt => "SINT",
            DataType::USInt => "USINT",
            DataType::Word => "WORD",
            DataType::UInt => "UINT",
            DataType::Int => "INT",
            DataType::DWord => "DWORD",
            DataType::UDInt => "UDINT",
            DataType::DInt => "DINT",
            DataType::Real => "REAL",
            DataType::LReal => "LREAL",
            DataType::Time => "TIME",
            DataType::String(_) => "STRING",
            DataType::DateAndTime => "DATE_AND_TIME",
        }
    }

    /// Bytes the value occupies in PLC memory (a BOOL occupies its byte).
    pub fn size(self) -> u32 {
        match self {
            DataType::Bool | DataType::Byte | DataType::Char | DataType::SInt | DataType::USInt => {
                1
            }
            DataType::Word | DataType::UInt | DataType::Int => 2,
            DataType::DWord
            | DataType::UDInt
            | DataType::DInt
            | DataType::Real
            | DataType::Time => 4,
            DataType::LReal | DataType::DateAndTime => 8,
            DataType::String(n) => 2 + u32::from(n),
        }
    }

    /// The type an address implies when `type` is not given.
    pub fn default_for(width: Width) -> DataType {
        match width {
            Width::Bit => DataType::Bool,
            Width::Byte => DataType::Byte,
            Width::Word => DataType::Word,
            Width::DWord => DataType::DWord,
        }
    }

    /// Whether a value of this type may sit at an address of this width: X holds
    /// BOOL only; W 2-byte and D 4-byte types; B any byte-aligned type (8-byte and
    /// STRING values are addressed by their first byte).
    pub fn fits(self, width: Width) -> bool {
        match width {
            Width::Bit => self == DataType::Bool,
            Width::Byte => self != DataType::Bool,
            Width::Word => self.size() == 2,
            Width::DWord => self.size() == 4,
        }
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum S7Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// DATE_AND_TIME as seconds since the Unix epoch (the PLC's local time, unzoned).
    DateTime(f64),
}

impl S7Value {
    /// The value as a number (text has none).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            S7Value::Bool(b) => Some(f64::from(u8::from(*b))),
            S7Value::Int(i) => Some(*i as f64),
            S7Value::Float(f) | S7Value::DateTime(f) => Some(*f),
            S7Value::Text(_) => None,
        }
    }
}

/// Why bytes could not be decoded into a type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("need {need} bytes, have {have}")]
    Short { need: usize, have: usize },
    #[error("invalid BCD byte {0:#04x} in DATE_AND_TIME")]
    Bcd(u8),
    #[error("DATE_AND_TIME field out of range")]
    DateRange,
    #[error("STRING current length {len} exceeds its maximum {max}")]
    StringLength { len: u8, max: u8 },
}

/// Decodes a value of `ty` from PLC memory starting at `b[0]` (big-endian, as S7 stores it).
pub fn decode_value(ty: DataType, bit: u8, b: &[u8]) -> Result<S7Value, DecodeError> {
    let need = ty.size() as usize;
    let need = if let DataType::String(_) = ty {
        2
    } else {
        need
    };
    if b.len() < need {
        return Err(DecodeError::Short {
            need,
            have: b.len(),
        });
    }
    let arr2 = |b: &[u8]| [b[0], b[1]];
    let arr4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    Ok(match ty {
        DataType::Bool => S7Value::Bool(b[0] >> (bit & 7) & 1 == 1),
        DataType::Byte | DataType::USInt | DataType::Char => S7Value::Int(i64::from(b[0])),
        DataType::SInt => S7Value::Int(i64::from(b[0] as i8)),
        DataType::Word | DataType::UInt => S7Value::Int(i64::from(u16::from_be_bytes(arr2(b)))),
        DataType::Int => S7Value::Int(i64::from(i16::from_be_bytes(arr2(b)))),
        DataType::DWord | DataType::UDInt => S7Value::Int(i64::from(u32::from_be_bytes(arr4(b)))),
        DataType::DInt | DataType::Time => S7Value::Int(i64::from(i32::from_be_bytes(arr4(b)))),
        DataType::Real => S7Value::Float(f64::from(f32::from_be_bytes(arr4(b)))),
        DataType::LReal => S7Value::Float(f64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ])),
        DataType::String(declared) => {
            // Byte 0 is the maximum length the PLC declared, byte 1 the current one.
            let mut s = String::new();
            decode_string_into(declared, b, &mut s)?;
            S7Value::Text(s)
        }
        DataType::DateAndTime => S7Value::DateTime(decode_dt(&b[..8])?),
    })
}

/// Decodes an S7 STRING (declared length `declared`) into `out` (cleared first)
/// without allocating once `out` has grown to the longest value.
pub fn decode_string_into(declared: u8, b: &[u8], out: &mut String) -> Result<(), DecodeError> {
    out.clear();
    if b.len() < 2 {
        return Err(DecodeError::Short {
            need: 2,
            have: b.len(),
        });
    }
    let (max, len) = (b[0], b[1]);
    if len > max {
        return Err(DecodeError::StringLength { len, max });
    }
    let len = usize::from(len.min(declared));
    let text = b.get(2..2 + len).ok_or(DecodeError::Short {
        need: 2 + len,
        have: b.len(),
    })?;
    // S7 strings are single-byte characters (Latin-1 / Windows-1252 in practice).
    out.extend(text.iter().map(|&c| char::from(c)));
    Ok(())
}

fn bcd(b: u8) -> Result<u32, DecodeError> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    if hi > 9 || lo > 9 {
        return Err(DecodeError::Bcd(b));
    }
    Ok(u32::from(hi) * 10 + u32::from(lo))
}

/// DATE_AND_TIME: year (BCD, 90–99 → 1990s, 00–89 → 2000s), month, day, hour,
/// minute, second, milliseconds in three BCD digits, weekday in the last nibble.
fn decode_dt(b: &[u8]) -> Result<f64, DecodeError> {
    let yy = bcd(b[0])?;
    let year = if yy >= 90 { 1900 + yy } else { 2000 + yy };
    let (month, day, hour, min, sec) = (bcd(b[1])?, bcd(b[2])?, bcd(b[3])?, bcd(b[4])?, bcd(b[5])?);
    let ms_hi = bcd(b[6])?;
    let ms_lo = u32::from(b[7] >> 4);
    if ms_lo > 9
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return Err(DecodeError::DateRange);
    }
    let ms = ms_hi * 10 + ms_lo;
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    Ok(secs as f64 + f64::from(ms) / 1000.0)
}

/// Encodes a value of `ty` for a write (numbers only; BOOL as its byte with `bit` set
/// or cleared is the caller's business, so it is written as a BIT item instead).
pub fn encode_number(ty: DataType, v: f64, out: &mut Vec<u8>) -> Result<(), String> {
    let int = |lo: f64, hi: f64| {
        if v.fract() == 0.0 && v >= lo && v <= hi {
            Ok(v as i64)
        } else {
            Err(format!("{v} does not fit a {ty:?}"))
        }
    };
    match ty {
        DataType::Bool => out.push(u8::from(v != 0.0)),
        DataType::Byte | DataType::USInt | DataType::Char => out.push(int(0.0, 255.0)? as u8),
        DataType::SInt => out.push(int(-128.0, 127.0)? as i8 as u8),
        DataType::Word | DataType::UInt => {
            out.extend_from_slice(&(int(0.0, 65535.0)? as u16).to_be_bytes())
        }
        DataType::Int => out.extend_from_slice(&(int(-32768.0, 32767.0)? as i16).to_be_bytes()),
        DataType::DWord | DataType::UDInt => {
            out.extend_from_slice(&(int(0.0, 4_294_967_295.0)? as u32).to_be_bytes())
        }
        DataType::DInt | DataType::Time => {
            out.extend_from_slice(&(int(-2_147_483_648.0, 2_147_483_647.0)? as i32).to_be_bytes())
        }
        DataType::Real => out.extend_from_slice(&(v as f32).to_be_bytes()),
        DataType::LReal => out.extend_from_slice(&v.to_be_bytes()),
        DataType::String(_) | DataType::DateAndTime => {
            return Err(format!("{ty:?} cannot be written from a number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_forms_engineers_write() {
        let a = |s: &str| Address::parse(s).expect(s);
        assert_eq!(
            a("DB1.DBX0.0"),
            Address {
                area: Area::Db(1),
                byte: 0,
                bit: 0,
                width: Width::Bit
            }
        );
        assert_eq!(a("db10.dbw2").width, Width::Word);
        assert_eq!(
            a("DB3.DBD4"),
            Address {
                area: Area::Db(3),
                byte: 4,
                bit: 0,
                width: Width::DWord
            }
        );
        assert_eq!(a("DB1.DBB1").width, Width::Byte);
        assert_eq!(
            a("M0.1"),
            Address {
                area: Area::Flags,
                byte: 0,
                bit: 1,
                width: Width::Bit
            }
        );
        assert_eq!(a("MW10").width, Width::Word);
        assert_eq!(a("MD20").byte, 20);
        assert_eq!(a("I0.0").area, Area::Inputs);
        assert_eq!(
            a("E0.7"),
            Address {
                area: Area::Inputs,
                byte: 0,
                bit: 7,
                width: Width::Bit
            }
        );
        assert_eq!(a("Q1.3").area, Area::Outputs);
        assert_eq!(a("A1.3").area, Area::Outputs);
        assert_eq!(a("IB4").width, Width::Byte);
        assert_eq!(a("QW6").width, Width::Word);
        assert_eq!(a("AD8").area, Area::Outputs);
        assert_eq!(a("MX3.2").bit, 2);
        for s in ["DB1.DBX0.0", "DB7.DBW2", "MB5", "I0.1", "QD8"] {
            assert_eq!(a(s).to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("DB0.DBW2", "DB number"),
            ("DB1.W2", "DBX, DBB, DBW or DBD"),
            ("DB1", "DB1.DBW2"),
            ("MW", "byte offset"),
            ("M0.8", "0–7"),
            ("M0", "needs `.bit`"),
            ("MW2.1", "only bit addresses"),
            ("Z12", "unknown area"),
            ("MD9999999", "byte offset"),
            ("MK4", "expected X"),
        ] {
            let e = Address::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn types_check_against_the_address_width() {
        assert!(DataType::Real.fits(Width::DWord));
        assert!(!DataType::Real.fits(Width::Word));
        assert!(DataType::Int.fits(Width::Word));
        assert!(DataType::LReal.fits(Width::Byte));
        assert!(DataType::String(10).fits(Width::Byte));
        assert!(!DataType::Bool.fits(Width::Byte));
        assert!(!DataType::Byte.fits(Width::Bit));
        assert_eq!(DataType::String(10).size(), 12);
        assert_eq!(DataType::parse("dt", None), Some(DataType::DateAndTime));
        assert_eq!(
            DataType::parse("STRING", Some(8)),
            Some(DataType::String(8))
        );
    }

    #[test]
    fn decodes_every_type_big_endian() {
        let d = |ty, b: &[u8]| decode_value(ty, 0, b).expect("decodes");
        assert_eq!(
            decode_value(DataType::Bool, 3, &[0b1000]).expect("bit"),
            S7Value::Bool(true)
        );
        assert_eq!(
            decode_value(DataType::Bool, 2, &[0b1000]).expect("bit"),
            S7Value::Bool(false)
        );
        assert_eq!(d(DataType::Byte, &[0xFE]), S7Value::Int(254));
        assert_eq!(d(DataType::SInt, &[0xFE]), S7Value::Int(-2));
        assert_eq!(d(DataType::Word, &[0xFF, 0xFE]), S7Value::Int(65534));
        assert_eq!(d(DataType::Int, &[0xFF, 0xFE]), S7Value::Int(-2));
        assert_eq!(
            d(DataType::DWord, &[0xFF, 0xFF, 0xFF, 0xFE]),
            S7Value::Int(4_294_967_294)
        );
        assert_eq!(
            d(DataType::DInt, &[0xFF, 0xFF, 0xFF, 0xFE]),
            S7Value::Int(-2)
        );
        assert_eq!(
            d(DataType::Real, &1.5f32.to_be_bytes()),
            S7Value::Float(1.5)
        );
        assert_eq!(
            d(DataType::LReal, &(-2.25f64).to_be_bytes()),
            S7Value::Float(-2.25)
        );
        assert_eq!(
            d(DataType::String(10), &[10, 3, b'a', b'b', b'c', 0]),
            S7Value::Text("abc".into())
        );
        // 2026-11-22 05:01:19.123, a Sunday (weekday 1).
        let dt = d(
            DataType::DateAndTime,
            &[0x26, 0x11, 0x22, 0x05, 0x01, 0x19, 0x12, 0x31],
        );
        assert_eq!(dt, S7Value::DateTime(1_795_323_679.123));
        assert_eq!(
            d(DataType::DateAndTime, &[0x90, 0x01, 0x01, 0, 0, 0, 0, 0x02]),
            S7Value::DateTime(631_152_000.0)
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(decode_value(DataType::Real, 0, &[1, 2]).is_err());
        assert!(decode_value(DataType::DateAndTime, 0, &[0x2A, 1, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_value(DataType::DateAndTime, 0, &[0x26, 0x13, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_value(DataType::String(4), 0, &[4, 5, 1, 2, 3, 4]).is_err());
        assert!(decode_value(DataType::String(4), 0, &[4, 4, 1]).is_err());
    }

    #[test]
    fn numbers_encode_and_decode_back() {
        for (ty, v) in [
            (DataType::Int, -1234.0),
            (DataType::DInt, 123_456_789.0),
            (DataType::Word, 65535.0),
            (DataType::Real, 3.5),
            (DataType::LReal, 1e300),
            (DataType::SInt, -5.0),
        ] {
            let mut b = Vec::new();
            encode_number(ty, v, &mut b).expect("fits");
            assert_eq!(decode_value(ty, 0, &b).expect("decodes").as_f64(), Some(v));
        }
        assert!(encode_number(DataType::Int, 40000.0, &mut Vec::new()).is_err());
        assert!(encode_number(DataType::Byte, 1.5, &mut Vec::new()).is_err());
    }
}
