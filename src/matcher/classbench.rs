//! Loader for ClassBench filter (rule) and trace (header) files.
//!
//! Filter lines look like
//! `@195.146.99.241/32<TAB>102.208.113.69/32<TAB>0 : 65535<TAB>1707 : 1707<TAB>0x06/0xFF<TAB>0x0000/0x0200`:
//! source and destination prefixes, inclusive source and destination port ranges, protocol
//! `value/mask` (`0x00/0x00` = any, else mask `0xFF`) and a TCP-flags column that is ignored.
//! Line order is priority order. Trace lines are tab-separated decimals: source, destination,
//! source port, destination port, protocol, flags (ignored) and the index of the rule the
//! header was generated from. Files ending in `.gz` are decompressed on the fly.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Key, PortRange, Prefix, Rule};

/// A load or parse failure, naming the file and (for parse errors) the 1-based line.
#[derive(Debug)]
pub struct Error {
    file: PathBuf,
    line: Option<usize>,
    message: String,
}

impl Error {
    /// The file that failed.
    pub fn file(&self) -> &Path {
        &self.file
    }
    /// The 1-based line that failed to parse, if the failure was a parse error.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for Error {}

/// One trace header and the rule it was generated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// The header.
    pub key: Key<u32>,
    /// Index of the rule whose corner the header was drawn from (the first match is at or
    /// before it).
    pub filter: u32,
}

fn read(path: &Path) -> Result<String, Error> {
    let err = |e: std::io::Error| Error {
        file: path.to_owned(),
        line: None,
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    let mut f = std::fs::File::open(path).map_err(err)?;
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut bytes)
            .map_err(err)?;
    } else {
        f.read_to_end(&mut bytes).map_err(err)?;
    }
    String::from_utf8(bytes).map_err(|e| Error {
        file: path.to_owned(),
        line: None,
        message: e.to_string(),
    })
}

/// Loads a filter file (plain or `.gz`).
pub fn load_filters(path: impl AsRef<Path>) -> Result<Vec<Rule<u32>>, Error> {
    let path = path.as_ref();
    parse_filters(&read(path)?, path)
}

/// Loads a trace file (plain or `.gz`).
pub fn load_trace(path: impl AsRef<Path>) -> Result<Vec<TraceEntry>, Error> {
    let path = path.as_ref();
    parse_trace(&read(path)?, path)
}

/// Parses filter-file text; `file` is only used in errors. Blank lines are skipped.
pub fn parse_filters(text: &str, file: impl AsRef<Path>) -> Result<Vec<Rule<u32>>, Error> {
    parse_lines(text, file.as_ref(), parse_filter)
}

/// Parses trace-file text; `file` is only used in errors. Blank lines are skipped.
pub fn parse_trace(text: &str, file: impl AsRef<Path>) -> Result<Vec<TraceEntry>, Error> {
    parse_lines(text, file.as_ref(), parse_header)
}

fn parse_lines<T>(
    text: &str,
    file: &Path,
    f: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            f(l).map_err(|message| Error {
                file: file.to_owned(),
                line: Some(i + 1),
                message,
            })
        })
        .collect()
}

fn parse_filter(line: &str) -> Result<Rule<u32>, String> {
    let line = line
        .strip_prefix('@')
        .ok_or("filter line does not start with '@'")?;
    let cols: Vec<&str> = line
        .split('\t')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if cols.len() < 5 {
        return Err(format!(
            "expected at least 5 tab-separated columns, found {}",
            cols.len()
        ));
    }
    let proto = {
        let (v, m) = cols[4]
            .split_once('/')
            .ok_or_else(|| format!("bad protocol {:?}", cols[4]))?;
        let (v, m) = (hex_u8(v)?, hex_u8(m)?);
        match m {
            0 => None,
            0xff => Some(v),
            _ => {
                return Err(format!(
                    "unsupported protocol mask {m:#04x} (only 0x00 and 0xFF)"
                ));
            }
        }
    };
    Ok(Rule {
        src: prefix(cols[0])?,
        dst: prefix(cols[1])?,
        sport: range(cols[2])?,
        dport: range(cols[3])?,
        proto,
    })
}

fn hex_u8(s: &str) -> Result<u8, String> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| format!("expected hex, got {s:?}"))?;
    u8::from_str_radix(h, 16).map_err(|e| format!("bad hex byte {s:?}: {e}"))
}

fn prefix(s: &str) -> Result<Prefix<u32>, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("bad prefix {s:?}"))?;
    let addr: std::net::Ipv4Addr = a.parse().map_err(|e| format!("bad address {a:?}: {e}"))?;
    let len: u8 = l
        .parse()
        .map_err(|e| format!("bad prefix length {l:?}: {e}"))?;
    if len > 32 {
        return Err(format!("prefix length {len} over 32"));
    }
    Ok(Prefix::new(u32::from(addr), len))
}

fn range(s: &str) -> Result<PortRange, String> {
    let (lo, hi) = s
        .split_once(':')
        .ok_or_else(|| format!("bad port range {s:?}"))?;
    let p = |x: &str| {
        x.trim()
            .parse::<u16>()
            .map_err(|e| format!("bad port {x:?}: {e}"))
    };
    let (lo, hi) = (p(lo)?, p(hi)?);
    if lo > hi {
        return Err(format!("empty port range {lo} : {hi}"));
    }
    Ok(PortRange::new(lo, hi))
}

fn parse_header(line: &str) -> Result<TraceEntry, String> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.len() < 7 {
        return Err(format!("expected 7 columns, found {}", cols.len()));
    }
    fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("bad {what} {s:?}"))
    }
    Ok(TraceEntry {
        key: Key {
            src: num(cols[0], "source address")?,
            dst: num(cols[1], "destination address")?,
            sport: num(cols[2], "source port")?,
            dport: num(cols[3], "destination port")?,
            proto: num(cols[4], "protocol")?,
        },
        filter: num(cols[6], "filter index")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_and_traces() {
        let text = "@195.146.99.241/32\t102.208.113.69/32\t0 : 65535\t1707 : 1707\t0x06/0xFF\t0x0000/0x0200\t\n\
                    @0.0.0.0/0\t10.0.0.0/8\t1 : 2\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n";
        let r = parse_filters(text, "x").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].src, Prefix::new(0xc392_63f1, 32));
        assert_eq!(r[0].dport, PortRange::exact(1707));
        assert_eq!(r[0].proto, Some(6));
        assert_eq!(r[1].dst, Prefix::new(0x0a00_0000, 8));
        assert_eq!(r[1].sport, PortRange::new(1, 2));
        assert_eq!(r[1].proto, None);
        let t = parse_trace("1727690166\t758993919\t0\t65535\t6\t0\t820\n", "t").unwrap();
        assert_eq!(
            t[0].key,
            Key {
                src: 1727690166,
                dst: 758993919,
                sport: 0,
                dport: 65535,
                proto: 6
            }
        );
        assert_eq!(t[0].filter, 820);
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = "@1.2.3.4/32\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\t0/0\n@1.2.3.4/33\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\n";
        let e = parse_filters(text, "rules.txt").unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(
            e.to_string().starts_with("rules.txt:2: prefix length 33"),
            "{e}"
        );
        for bad in [
            "1.2.3.4/8\t",
            "@1.2.3.4/8\t0.0.0.0/0\t5 : 4\t0 : 1\t0x06/0xFF",
            "@1.2.3.4/8\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0x0F",
        ] {
            assert_eq!(
                parse_filters(bad, "f").unwrap_err().line(),
                Some(1),
                "{bad}"
            );
        }
        let e = parse_trace("1 2 3 4 5 6 7\n\n1 2 3 70000 5 6 7\n", "tr").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("destination port"), "{e}");
        let e = load_filters("/nonexistent/classbench").unwrap_err();
        assert_eq!(e.line(), None);
        assert_eq!(e.file(), Path::new("/nonexistent/classbench"));
    }
}
