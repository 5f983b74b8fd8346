//! Tabular data for the churn model: any CSV with a header row, encoded automatically.
//!
//! - A column whose non-blank cells all parse as numbers is numeric.
//! - A text column with at most two distinct values becomes one 0/1 feature
//!   (`column=value` for the second value in sorted order).
//! - A text column with more values becomes one 0/1 feature per value (one-hot), unless it
//!   looks like an identifier (more than [`MAX_CATEGORIES`] values, or a distinct value in
//!   nearly every row), which is left out.
//! - Blank cells (also `NA`, `N/A`, `NaN`, `null`) are missing values (`NaN`); the trees
//!   learn which way missing values go.
//!
//! The label column is read as churned (1) / stayed (0): `1`, `yes`, `true`, `y`, `t`,
//! `churned` are 1; `0`, `no`, `false`, `n`, `f` are 0; any other two distinct values are
//! accepted when one of them is in those sets.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// More distinct values than this and a text column is treated as an identifier.
pub const MAX_CATEGORIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("no column named {0:?} (columns: {1})")]
    MissingColumn(String, String),
    #[error(
        "line {line}: label {value:?} is neither churned (1/yes/true) nor stayed (0/no/false)"
    )]
    BadLabel { line: usize, value: String },
    #[error("the data has no rows")]
    Empty,
    #[error("the label must have both classes (churned and stayed); found only {0}")]
    OneClass(&'static str),
    #[error("no usable feature columns")]
    NoFeatures,
}

/// How one source column becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnEncoding {
    Numeric {
        column: String,
    },
    /// 1.0 when the cell equals `one`, 0.0 for any other non-blank value.
    Binary {
        column: String,
        one: String,
    },
    OneHot {
        column: String,
        categories: Vec<String>,
    },
}

/// The encoding learnt from training data; applies the same to new rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub columns: Vec<ColumnEncoding>,
}

impl Encoder {
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for c in &self.columns {
            match c {
                ColumnEncoding::Numeric { column } => names.push(column.clone()),
                ColumnEncoding::Binary { column, one } => names.push(format!("{column}={one}")),
                ColumnEncoding::OneHot { column, categories } => {
                    names.extend(categories.iter().map(|v| format!("{column}={v}")))
                }
            }
        }
        names
    }

    /// Encode one row given a lookup from source column name to its cell.
    pub fn encode<'a>(&self, cell: impl Fn(&str) -> Option<&'a str>) -> Vec<f64> {
        let mut out = Vec::new();
        for c in &self.columns {
            match c {
                ColumnEncoding::Numeric { column } => {
                    out.push(cell(column).and_then(parse_number).unwrap_or(f64::NAN))
                }
                ColumnEncoding::Binary { column, one } => out.push(match cell(column) {
                    Some(v) if !is_blank(v) => f64::from(u8::from(v.trim() == one)),
                    _ => f64::NAN,
                }),
                ColumnEncoding::OneHot { column, categories } => match cell(column) {
                    Some(v) if !is_blank(v) => out.extend(
                        categories
                            .iter()
                            .map(|k| f64::from(u8::from(v.trim() == k))),
                    ),
                    _ => out.extend(std::iter::repeat_n(f64::NAN, categories.len())),
                },
            }
        }
        out
    }
}

/// Encoded data: `columns[j][i]` is feature `j` of row `i`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    pub columns: Vec<Vec<f64>>,
    /// 1.0 churned, 0.0 stayed.
    pub labels: Vec<f64>,
    /// The id column's values, when one was named.
    pub ids: Option<Vec<String>>,
    pub encoder: Encoder,
}

pub fn is_blank(cell: &str) -> bool {
    let t = cell.trim();
    t.is_empty() || ["na", "n/a", "nan", "null", "none"].contains(&t.to_ascii_lowercase().as_str())
}

fn parse_number(cell: &str) -> Option<f64> {
    if is_blank(cell) {
        return None;
    }
    cell.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Churned (Some(1.0)), stayed (Some(0.0)) or not a recognised label.
pub fn parse_label(cell: &str) -> Option<f64> {
    let t = cell.trim().to_lowercase();
    match t.as_str() {
        "1" | "1.0" | "yes" | "y" | "true" | "t" | "churned" | "churn" => Some(1.0),
        "0" | "0.0" | "no" | "n" | "false" | "f" | "stayed" | "active" => Some(0.0),
        _ => None,
    }
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    pub fn positives(&self) -> usize {
        self.labels.iter().filter(|y| **y > 0.5).count()
    }

    /// Features of row `i` in feature order.
    pub fn row(&self, i: usize) -> Vec<f64> {
        self.columns.iter().map(|c| c[i]).collect()
    }

    /// Column-major values of the given rows (the layout the trees train on).
    pub fn column_major(&self, rows: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len() * self.columns.len());
        for c in &self.columns {
            out.extend(rows.iter().map(|i| c[*i]));
        }
        out
    }

    pub fn from_csv_path(
        path: impl AsRef<Path>,
        label: &str,
        id: Option<&str>,
    ) -> Result<Self, DatasetError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| DatasetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_csv(file, label, id)
    }

    pub fn from_csv(
        reader: impl std::io::Read,
        label: &str,
        id: Option<&str>,
    ) -> Result<Self, DatasetError> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(reader);
        let headers: Vec<String> = rdr
            .headers()?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        let mut records = Vec::new();
        for r in rdr.records() {
            records.push(r?.iter().map(str::to_string).collect::<Vec<_>>());
        }
        Self::from_records(&headers, &records, label, id)
    }

    /// Build from a header and string rows (what the CSV reader yields).
    pub fn from_records(
        headers: &[String],
        records: &[Vec<String>],
        label: &str,
        id: Option<&str>,
    ) -> Result<Self, DatasetError> {
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| DatasetError::MissingColumn(name.to_string(), headers.join(", ")))
        };
        let label_col = find(label)?;
        let id_col = id.map(find).transpose()?;
        if records.is_empty() {
            return Err(DatasetError::Empty);
        }
        let labels = read_labels(records, label_col)?;
        let positives = labels.iter().filter(|y| **y > 0.5).count();
        if positives == 0 {
            return Err(DatasetError::OneClass("stayed"));
        }
        if positives == labels.len() {
            return Err(DatasetError::OneClass("churned"));
        }

        let mut encoder = Encoder::default();
        for (j, name) in headers.iter().enumerate() {
            if j == label_col || Some(j) == id_col {
                continue;
            }
            let cells = records
                .iter()
                .map(|r| r.get(j).map(String::as_str).unwrap_or(""));
            if cells
                .clone()
                .all(|c| is_blank(c) || parse_number(c).is_some())
            {
                if cells.clone().any(|c| !is_blank(c)) {
                    encoder.columns.push(ColumnEncoding::Numeric {
                        column: name.clone(),
                    });
                }
                continue;
            }
            let values: BTreeSet<&str> = cells.filter(|c| !is_blank(c)).map(str::trim).collect();
            let identifier_like = values.len() > MAX_CATEGORIES
                || (values.len() > 2 && values.len() * 10 > records.len() * 9);
            if identifier_like || values.len() < 2 {
                continue;
            }
            let values: Vec<String> = values.into_iter().map(str::to_string).collect();
            encoder.columns.push(if values.len() == 2 {
                ColumnEncoding::Binary {
                    column: name.clone(),
                    one: values[1].clone(),
                }
            } else {
                ColumnEncoding::OneHot {
                    column: name.clone(),
                    categories: values,
                }
            });
        }
        if encoder.columns.is_empty() {
            return Err(DatasetError::NoFeatures);
        }
        let feature_names = encoder.feature_names();
        let mut columns = vec![Vec::with_capacity(records.len()); feature_names.len()];
        for r in records {
            let row = encoder.encode(|name| {
                headers
                    .iter()
                    .position(|h| h == name)
                    .and_then(|j| r.get(j))
                    .map(String::as_str)
            });
            for (c, v) in columns.iter_mut().zip(row) {
                c.push(v);
            }
        }
        let ids = id_col.map(|j| {
            records
                .iter()
                .map(|r| r.get(j).cloned().unwrap_or_default())
                .collect()
        });
        Ok(Dataset {
            feature_names,
            columns,
            labels,
            ids,
            encoder,
        })
    }
}

fn read_labels(records: &[Vec<String>], col: usize) -> Result<Vec<f64>, DatasetError> {
    let cell = |r: &Vec<String>| r.get(col).map(|s| s.trim().to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let v = cell(r);
        match parse_label(&v) {
            Some(y) => out.push(y),
            None => {
                return Err(DatasetError::BadLabel {
                    line: i + 2,
                    value: v,
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\
id,plan,region,tenure,charges,churn
a1,basic,north,1,29.5,Yes
a2,pro,south,34,,No
a3,basic,east,2,53.8,yes
a4,pro,north, ,42.3,no
";

    #[test]
    fn encodes_numeric_binary_and_one_hot_columns_with_blanks_as_missing() {
        let ds = Dataset::from_csv(CSV.as_bytes(), "churn", Some("id")).unwrap();
        assert_eq!(
            ds.feature_names,
            vec![
                "plan=pro",
                "region=east",
                "region=north",
                "region=south",
                "tenure",
                "charges"
            ]
        );
        assert_eq!(ds.labels, vec![1.0, 0.0, 1.0, 0.0]);
        assert_eq!(ds.ids.as_deref().unwrap()[3], "a4");
        assert_eq!(ds.row(0)[..4], [0.0, 0.0, 1.0, 0.0]);
        assert!(ds.columns[5][1].is_nan(), "blank charges is missing");
        assert!(ds.columns[4][3].is_nan(), "whitespace tenure is missing");
        assert_eq!(ds.columns[4][1], 34.0);
        assert_eq!(ds.rows(), 4);
        assert_eq!(ds.positives(), 2);
    }

    #[test]
    fn identifier_like_text_columns_are_left_out() {
        let mut csv = String::from("customer,x,label\n");
        for i in 0..20 {
            csv.push_str(&format!("C-{i},{i},{}\n", i % 2));
        }
        let ds = Dataset::from_csv(csv.as_bytes(), "label", None).unwrap();
        assert_eq!(ds.feature_names, vec!["x"]);
    }

    #[test]
    fn bad_or_one_class_labels_are_errors() {
        let err = Dataset::from_csv("x,y\n1,maybe\n".as_bytes(), "y", None).unwrap_err();
        assert!(
            matches!(err, DatasetError::BadLabel { line: 2, .. }),
            "{err}"
        );
        let err = Dataset::from_csv("x,y\n1,no\n2,no\n".as_bytes(), "y", None).unwrap_err();
        assert!(matches!(err, DatasetError::OneClass(_)));
        let err = Dataset::from_csv("x,y\n1,no\n".as_bytes(), "label", None).unwrap_err();
        assert!(matches!(err, DatasetError::MissingColumn(..)));
    }

    #[test]
    fn the_encoder_applies_the_same_encoding_to_new_rows() {
        let ds = Dataset::from_csv(CSV.as_bytes(), "churn", Some("id")).unwrap();
        let row = ds.encoder.encode(|c| match c {
            "plan" => Some("pro"),
            "region" => Some("west"),
            "tenure" => Some("7"),
            _ => None,
        });
        assert_eq!(row[..5], [1.0, 0.0, 0.0, 0.0, 7.0]);
        assert!(row[5].is_nan());
    }
}
