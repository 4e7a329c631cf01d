//! A benchmark's result as named fields: a table for people (stderr) and one JSON line for
//! scripts (stdout). Shared by the load clients (`#[path]` modules, as `proc.rs`).

use std::fmt::Write as _;

pub enum Value {
    Num(f64),
    Int(u64),
    Str(String),
    Null,
}

/// Print `fields` as the table and the JSON line.
pub fn print(fields: &[(&'static str, Value)]) {
    let mut table = String::new();
    for (k, v) in fields {
        let v = match v {
            Value::Num(x) => format!("{x:.3}"),
            Value::Int(x) => x.to_string(),
            Value::Str(s) => s.clone(),
            Value::Null => "-".into(),
        };
        let _ = writeln!(table, "  {k:<36} {v}");
    }
    eprint!("{table}");
    let mut json = String::from("{");
    for (idx, (k, v)) in fields.iter().enumerate() {
        if idx > 0 {
            json.push(',');
        }
        let v = match v {
            Value::Num(x) if x.is_finite() => format!("{x:.4}"),
            Value::Int(x) => x.to_string(),
            Value::Str(s) => format!("\"{}\"", escape(s)),
            _ => "null".into(),
        };
        let _ = write!(json, "\"{k}\":{v}");
    }
    json.push('}');
    println!("{json}");
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}
