//! Printing listings: aligned tables for people, JSON with `-o json` for scripts.

use crate::connect::Output;
use serde::Serialize;

/// Prints `value` as JSON, or as a table of `rows` under `headers`.
pub fn print<T: Serialize>(
    output: Output,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Table => print!("{}", table(headers, &rows)),
    }
    Ok(())
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A time in the past as a short age: `3s`, `5m`, `2h`, `4d`.
pub fn age(at_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - at_ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(
            &["ID", "STATE"],
            &[
                vec!["1".into(), "pending".into()],
                vec!["100".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID   STATE\n1    pending\n100  x\n");
        assert_eq!(super::age(0, 90_000), "1m");
    }
}
