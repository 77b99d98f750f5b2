//! `.npy` arrays, read with any common element type and written as `f32`.
//!
//! Reading accepts `f2`/`f4`/`f8`, signed and unsigned integers of 1 to 8 bytes, and `bool`,
//! little or big endian, in C order, and converts to `f32`. Fortran-order arrays are refused
//! (rather than silently transposed). Writing is atomic.

use super::{f16_to_f32, read_file, write_atomic};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use npyz::{DType, Endianness, NpyFile, Order, TypeChar, WriterBuilder};
use std::path::Path;

const KIND: &str = "array file";
const SUPPORTED: &str = "float16/32/64, int8/16/32/64, uint8/16/32/64, bool";

/// Reads a `.npy` file into an `f32` tensor.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes; `path` only names the source in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Tensor> {
    check_header_shape(bytes, path)?;
    let npy = NpyFile::new(bytes).map_err(|e| {
        RuntimeError::format(path, KIND, format!("cannot parse the .npy header: {e}"))
    })?;
    let header = npy.header().clone();
    let data = npy.into_inner();

    if header.order() == Order::Fortran {
        return Err(RuntimeError::format(
            path,
            KIND,
            "the array is stored in Fortran order (hint: save it with np.save(path, np.ascontiguousarray(a)))",
        ));
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| RuntimeError::format(path, KIND, "a dimension does not fit in memory"))?;
    let dtype = header.dtype();
    let unsupported = |d: &DType| RuntimeError::UnsupportedDtype {
        path: path.to_path_buf(),
        tensor: None,
        dtype: d.descr(),
        supported: SUPPORTED,
    };
    let ts = match &dtype {
        DType::Plain(ts) => ts.clone(),
        other => return Err(unsupported(other)),
    };
    let size = ts.size_field() as usize;
    let ok = match ts.type_char() {
        TypeChar::Float => matches!(size, 2 | 4 | 8),
        TypeChar::Int | TypeChar::Uint => matches!(size, 1 | 2 | 4 | 8),
        TypeChar::Bool => size == 1,
        _ => false,
    };
    if !ok {
        return Err(unsupported(&dtype));
    }
    let n = crate::tensor::numel(&shape)
        .map_err(|_| RuntimeError::format(path, KIND, "the shape has too many elements"))?;
    let need = n
        .checked_mul(size)
        .ok_or_else(|| RuntimeError::format(path, KIND, "the shape has too many elements"))?;
    if data.len() != need {
        return Err(RuntimeError::format(
            path,
            KIND,
            format!(
                "the header promises {n} elements of {} ({need} bytes of data), the file has {} bytes of data{}",
                dtype.descr(),
                data.len(),
                if data.len() < need { " (truncated?)" } else { "" }
            ),
        ));
    }
    let big = ts.endianness() == Endianness::Big;
    let out = convert(data, ts.type_char(), size, big)
        .map_err(|detail| RuntimeError::format(path, KIND, detail))?;
    Ok(Tensor { shape, data: out })
}

/// Deepest bracket nesting accepted in a header: numpy writes a flat dict whose `shape` is
/// a tuple (depth 2), and only plain dtypes are read (a structured `descr` nests deeper).
const MAX_HEADER_DEPTH: usize = 4;
/// Longest header accepted: numpy's own reader refuses longer ones (`max_header_size`).
const MAX_HEADER_LEN: usize = 10_000;

/// Refuses a header that is longer than [`MAX_HEADER_LEN`] or nests brackets deeper than
/// [`MAX_HEADER_DEPTH`] before npyz sees it: its Python-literal parser backtracks
/// exponentially in the depth (fuzzing found a 166-byte file with 30 `{` that took minutes;
/// 12 levels of `{` take over a second, 4 well under a millisecond).
fn check_header_shape(bytes: &[u8], path: &Path) -> Result<()> {
    // Magic (6 bytes), version (2), header length: u16 in version 1, u32 from version 2.
    let (start, len) = match bytes {
        [0x93, b'N', b'U', b'M', b'P', b'Y', 1, _, a, b, ..] => {
            (10usize, u16::from_le_bytes([*a, *b]) as usize)
        }
        [0x93, b'N', b'U', b'M', b'P', b'Y', _, _, a, b, c, d, ..] => {
            (12, u32::from_le_bytes([*a, *b, *c, *d]) as usize)
        }
        _ => return Ok(()), // not a .npy header: npyz says so
    };
    let refuse = |detail: String| Err(RuntimeError::format(path, KIND, detail));
    if len > MAX_HEADER_LEN {
        return refuse(format!(
            "the .npy header is {len} bytes long, more than numpy reads ({MAX_HEADER_LEN}; corrupt file?)"
        ));
    }
    let header = &bytes[start..bytes.len().min(start + len)];
    let (mut depth, mut quote) = (0usize, None);
    for &b in header {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'(' | b'[' | b'{') => {
                depth += 1;
                if depth > MAX_HEADER_DEPTH {
                    return refuse(format!(
                        "the .npy header nests brackets more than {MAX_HEADER_DEPTH} deep: numpy \
                         writes a flat dict, and only plain dtypes are read (corrupt file?)"
                    ));
                }
            }
            (None, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

macro_rules! conv {
    ($data:expr, $t:ty, $big:expr) => {{
        const W: usize = std::mem::size_of::<$t>();
        $data
            .chunks_exact(W)
            .map(|c| {
                let a: [u8; W] = c.try_into().unwrap();
                (if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }) as f32
            })
            .collect::<Vec<f32>>()
    }};
}

fn convert(
    data: &[u8],
    tc: TypeChar,
    size: usize,
    big: bool,
) -> std::result::Result<Vec<f32>, String> {
    Ok(match (tc, size) {
        (TypeChar::Float, 4) => conv!(data, f32, big),
        (TypeChar::Float, 8) => conv!(data, f64, big),
        (TypeChar::Float, 2) => data
            .chunks_exact(2)
            .map(|c| {
                let a = [c[0], c[1]];
                f16_to_f32(if big {
                    u16::from_be_bytes(a)
                } else {
                    u16::from_le_bytes(a)
                })
            })
            .collect(),
        (TypeChar::Int, 1) => conv!(data, i8, big),
        (TypeChar::Int, 2) => conv!(data, i16, big),
        (TypeChar::Int, 4) => conv!(data, i32, big),
        (TypeChar::Int, 8) => conv!(data, i64, big),
        (TypeChar::Uint, 1) => conv!(data, u8, big),
        (TypeChar::Uint, 2) => conv!(data, u16, big),
        (TypeChar::Uint, 4) => conv!(data, u32, big),
        (TypeChar::Uint, 8) => conv!(data, u64, big),
        (TypeChar::Bool, 1) => {
            let mut out = Vec::with_capacity(data.len());
            for (i, &b) in data.iter().enumerate() {
                match b {
                    0 => out.push(0.0),
                    1 => out.push(1.0),
                    v => return Err(format!("element {i} is a bool with byte value {v}")),
                }
            }
            out
        }
        _ => return Err(format!("unsupported element type {tc:?}{size}")),
    })
}

/// Writes an `f32` tensor as a little-endian C-order `.npy` file, atomically.
pub fn write_npy(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let path = path.as_ref();
    tensor.validate()?;
    let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
    write_atomic(path, |w| {
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()?;
        writer.extend(tensor.data.iter().copied())?;
        writer.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal v1.0 header for hand-written files.
    pub(crate) fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        dict.push_str(&" ".repeat(pad));
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn deep_or_long_header_is_refused_quickly() {
        // The fuzzer's input (fuzz/regressions/data/npy-nested-header) took minutes in npyz.
        let shape = format!("{}(2,){}", "{".repeat(30), "}".repeat(30));
        let start = std::time::Instant::now();
        let e = parse_npy(
            &npy_bytes("<f4", false, &shape, &[0; 8]),
            Path::new("deep.npy"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("deep.npy") && e.contains("nests brackets more than 4 deep"),
            "{e}"
        );
        assert!(start.elapsed().as_secs() < 1);
        // At the limit (the dict is one level) npyz answers quickly: the nested shape is its
        // error. Brackets inside strings do not count.
        for open in ["(", "[", "{"] {
            let close = &")]}"["([{".find(open).unwrap()..][..1];
            let shape = format!("{}'{{{{{{{{{{'{}", open.repeat(3), close.repeat(3));
            let start = std::time::Instant::now();
            let e = parse_npy(&npy_bytes("<f4", false, &shape, &[]), Path::new("d.npy"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("nests brackets"), "{e}");
            assert!(
                start.elapsed().as_millis() < 500,
                "{shape}: {:?}",
                start.elapsed()
            );
        }
        let long = format!("(2,){}", " ".repeat(10_000));
        let e = parse_npy(
            &npy_bytes("<f4", false, &long, &[0; 8]),
            Path::new("long.npy"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than numpy reads (10000"), "{e}");
        let t = parse_npy(
            &npy_bytes("<f4", false, "(2,)", &[0; 8]),
            Path::new("ok.npy"),
        )
        .unwrap();
        assert_eq!(t.shape, vec![2]);
    }

    #[test]
    fn integer_bool_and_big_endian() {
        let p = Path::new("mem.npy");
        let d: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = parse_npy(&npy_bytes("<i8", false, "(2,)", &d), p).unwrap();
        assert_eq!(t.data, vec![-3.0, 7.0]);
        let d: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let t = parse_npy(&npy_bytes(">f4", false, "(1, 2)", &d), p).unwrap();
        assert_eq!((t.shape, t.data), (vec![1, 2], vec![1.5, -2.0]));
        let t = parse_npy(&npy_bytes("|b1", false, "(3,)", &[1, 0, 1]), p).unwrap();
        assert_eq!(t.data, vec![1.0, 0.0, 1.0]);
        let t = parse_npy(&npy_bytes("|u1", false, "(2, 2)", &[0, 255, 3, 4]), p).unwrap();
        assert_eq!(t.data, vec![0.0, 255.0, 3.0, 4.0]);
        let d: Vec<u8> = [5i32, -6].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = parse_npy(&npy_bytes("<i4", false, "(2,)", &d), p).unwrap();
        assert_eq!(t.data, vec![5.0, -6.0]);
        let t = parse_npy(&npy_bytes("<f2", false, "()", &[0x00, 0x3c]), p).unwrap();
        assert_eq!((t.shape, t.data), (vec![], vec![1.0]));
    }

    #[test]
    fn refused_files() {
        let p = Path::new("x.npy");
        let d: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let e = parse_npy(&npy_bytes("<f4", true, "(2,)", &d), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Fortran") && e.contains("x.npy"), "{e}");
        let e = parse_npy(&npy_bytes("<f4", false, "(3,)", &d), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("x.npy"), "{e}");
        let e = parse_npy(&npy_bytes("<c8", false, "(1,)", &d), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element type") && e.contains("<c8"), "{e}");
        let e = parse_npy(&npy_bytes("|b1", false, "(1,)", &[7]), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bool"), "{e}");
        let e = parse_npy(b"\x93NUMP", p).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("corrupt"), "{e}");
    }
}
