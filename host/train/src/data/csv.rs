//! Tabular data from CSV: a header row of column names, then one example per row; one
//! column (named in the spec) is the target, every other column a numeric feature.
//!
//! The dialect is RFC 4180's, restricted to one record per line: fields separated by commas,
//! optionally enclosed in double quotes (a doubled `""` inside stands for one quote, commas
//! inside are literal), surrounding spaces ignored, `\n` or `\r\n` line ends, blank lines
//! skipped, a UTF-8 byte-order mark allowed. Numbers are parsed with Rust's correctly
//! rounded `f32` parser (`1e-3`, `-.5`, `+2` are fine; `nan` and `inf` are rejected).

use super::{DataError, Dataset, Targets, sort_class_names};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What the target column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// A continuous number per row ([`Targets::Values`], width 1).
    #[default]
    Regression,
    /// A class name per row ([`Targets::Classes`]; any text, numbers included).
    Classification,
}

/// Splits one CSV line into trimmed fields, or says what is wrong with its quoting.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(format!(
                            "field {} has an opening quote but no closing one (a quoted field \
                             cannot span lines)",
                            fields.len() + 1
                        ));
                    }
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "field {} has `{c}` after its closing quote: expected a comma",
                        fields.len() + 1
                    ));
                }
            }
        } else {
            let mut ended = true;
            for c in chars.by_ref() {
                if c == ',' {
                    ended = false;
                    break;
                }
                field.push(c);
            }
            fields.push(field.trim_end().to_string());
            if ended {
                return Ok(fields);
            }
        }
    }
}

/// Loads a CSV file whose header names the columns. `target` is the target column; every
/// other column, in order, is a numeric feature (example shape `[features]`,
/// `feature_names` the header's names). For [`Task::Regression`] targets are numbers; for
/// [`Task::Classification`] they are class names, sorted (numerically when all are numbers)
/// to give the label indices. Errors name the file and line ([`DataError::Csv`]): no header,
/// an empty or repeated column name, an unknown `target` (the columns are listed), no
/// feature column, no data row, a row with more or fewer fields than the header, an empty
/// cell, a cell that is not a finite number, bad quoting, text that is not UTF-8.
pub fn load(path: &Path, target: &str, task: Task) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let err = |line: usize, what: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        what,
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(err(line, "not UTF-8 text".to_string()));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty());

    let (header_line, header) = lines.next().ok_or_else(|| {
        err(
            1,
            "empty file: expected a header row of column names".into(),
        )
    })?;
    let columns = split_fields(header).map_err(|w| err(header_line, w))?;
    let mut seen = BTreeMap::new();
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() {
            return Err(err(
                header_line,
                format!("header column {} has no name", i + 1),
            ));
        }
        if let Some(first) = seen.insert(c.as_str(), i) {
            return Err(err(
                header_line,
                format!(
                    "header names column `{c}` twice (columns {} and {})",
                    first + 1,
                    i + 1
                ),
            ));
        }
    }
    let target_col = seen.get(target).copied().ok_or_else(|| {
        err(
            header_line,
            format!(
                "no target column `{target}`; the columns are: {}",
                columns.join(", ")
            ),
        )
    })?;
    if columns.len() < 2 {
        return Err(err(
            header_line,
            format!("only the target column `{target}`: expected at least one feature column"),
        ));
    }
    let feature_names: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != target_col)
        .map(|(_, c)| c.clone())
        .collect();

    let mut features = Vec::new();
    let mut numeric_targets = Vec::new();
    let mut class_targets: Vec<String> = Vec::new();
    for (line, row) in lines {
        let fields = split_fields(row).map_err(|w| err(line, w))?;
        if fields.len() != columns.len() {
            return Err(err(
                line,
                format!(
                    "{} field(s), but the header has {} columns ({}): a missing or extra cell",
                    fields.len(),
                    columns.len(),
                    columns.join(",")
                ),
            ));
        }
        for (i, cell) in fields.iter().enumerate() {
            let name = &columns[i];
            if cell.is_empty() {
                return Err(err(
                    line,
                    format!("column `{name}` is empty: expected a value"),
                ));
            }
            if i == target_col && task == Task::Classification {
                class_targets.push(cell.clone());
                continue;
            }
            let v = cell
                .parse::<f32>()
                .map_err(|_| err(line, format!("column `{name}`: `{cell}` is not a number")))?;
            if !v.is_finite() {
                return Err(err(
                    line,
                    format!("column `{name}`: `{cell}` is not a finite number"),
                ));
            }
            if i == target_col {
                numeric_targets.push(v);
            } else {
                features.push(v);
            }
        }
    }
    let rows = features.len() / feature_names.len();
    if rows == 0 {
        return Err(err(
            header_line + 1,
            "no data rows after the header: expected at least one".into(),
        ));
    }
    let targets = match task {
        Task::Regression => Targets::Values {
            values: numeric_targets,
            width: 1,
            names: vec![target.to_string()],
        },
        Task::Classification => {
            let mut names = class_targets.clone();
            sort_class_names(&mut names);
            let index: BTreeMap<&str, u32> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as u32))
                .collect();
            let labels = class_targets.iter().map(|c| index[c.as_str()]).collect();
            Targets::Classes { labels, names }
        }
    };
    Dataset::new(
        features,
        vec![feature_names.len()],
        targets,
        Some(feature_names),
        path.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_with_quotes_and_spaces() {
        assert_eq!(split_fields("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_fields(r#" "x,y" , "say ""hi""",3"#).unwrap(),
            ["x,y", r#"say "hi""#, "3"]
        );
        assert_eq!(split_fields("1,,2,").unwrap(), ["1", "", "2", ""]);
        assert_eq!(split_fields("").unwrap(), [""]);
        assert!(
            split_fields(r#"1,"open"#)
                .unwrap_err()
                .contains("field 2 has an opening quote")
        );
        assert!(
            split_fields(r#""a"b,1"#)
                .unwrap_err()
                .contains("`b` after its closing quote")
        );
    }
}
