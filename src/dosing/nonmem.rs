//! NONMEM-format event datasets: CSV with a header row, one record per line.
//!
//! Column names are case-insensitive. `ID` and `TIME` are required; `EVID`, `AMT`, `CMT`,
//! `SS`, `II`, `ADDL`, `RATE`, `DV` and `MDV` have their NONMEM meaning; every other column is a
//! covariate (time-varying: each record carries its value, carried forward to later times).
//! `.` and empty fields are missing values. Blank lines, lines starting with `#` or `@`, and
//! rows whose `C` column holds anything but `.`, `0` or nothing are comments.
//!
//! This module reads and checks records; [`crate::backend::records`] gives them their meaning.

use crate::diag::{Diagnostic, SourceFile, Span};

/// NONMEM event identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evid {
    /// 0: an observation (output) record.
    Observation,
    /// 1: a dose.
    Dose,
    /// 2: an other-type event (output, covariate change).
    Other,
    /// 3: reset every compartment.
    Reset,
    /// 4: reset, then dose.
    ResetDose,
}

/// One record of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: f64,
    pub evid: Evid,
    pub amt: f64,
    /// 1-based compartment number (0: none given).
    pub cmt: i64,
    /// 0, 1 or 2.
    pub ss: u8,
    pub ii: f64,
    pub addl: u32,
    pub rate: f64,
    pub dv: Option<f64>,
    /// Covariate values of this record (NaN: missing), in [`Dataset::covariates`] order.
    pub covariates: Vec<f64>,
    /// 1-based line in the file (for messages).
    pub line: usize,
    /// 1-based columns of this record's CMT and RATE fields (1 where the column is absent), so
    /// that errors found against the model point at them.
    pub cmt_col: usize,
    pub rate_col: usize,
    /// 1-based columns of this record's covariate fields, in [`Dataset::covariates`] order.
    pub covariate_cols: Vec<usize>,
    /// 0-based position among the dataset's records (for output rows).
    pub row: usize,
}

/// The records of one subject, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub id: String,
    pub records: Vec<Record>,
}

/// A parsed dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    /// Covariate column names, lower-cased, in file order.
    pub covariates: Vec<String>,
    pub subjects: Vec<Subject>,
    /// Number of records.
    pub rows: usize,
}

const KNOWN: [&str; 11] = [
    "id", "time", "evid", "amt", "cmt", "ss", "ii", "addl", "rate", "dv", "mdv",
];

impl Dataset {
    pub fn load(path: &std::path::Path) -> Result<Dataset, Diagnostic> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Diagnostic {
            file: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read the dataset: {e}"),
        })?;
        Dataset::parse(&name, &text)
    }

    /// Parses a dataset; every error names the file, line and column.
    pub fn parse(name: &str, text: &str) -> Result<Dataset, Diagnostic> {
        // A byte-order mark, as spreadsheets write in UTF-8 CSV, is not part of the header.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let src = SourceFile::new(name, text);
        let mut offset = 0;
        let mut header: Option<Vec<String>> = None;
        let mut cols: Cols = Cols::default();
        let mut covariate_cols: Vec<usize> = Vec::new();
        let mut covariates: Vec<String> = Vec::new();
        let mut subjects: Vec<Subject> = Vec::new();
        let mut rows = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let line_start = offset;
            offset += raw.len() + 1;
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('@') {
                continue;
            }
            let fields = split_fields(line, line_start);
            let Some(names) = &header else {
                let names: Vec<String> = fields
                    .iter()
                    .map(|(s, _)| s.trim().trim_matches('"').to_ascii_lowercase())
                    .collect();
                for (k, n) in names.iter().enumerate() {
                    if names[..k].contains(n) {
                        return Err(src.error(fields[k].1, format!("column '{n}' appears twice")));
                    }
                }
                cols = Cols::find(&names);
                if cols.id.is_none() || cols.time.is_none() {
                    return Err(src.error(
                        Span::new(line_start, line_start),
                        "the header needs an ID and a TIME column",
                    ));
                }
                for (k, n) in names.iter().enumerate() {
                    if !KNOWN.contains(&n.as_str()) && n != "c" {
                        covariate_cols.push(k);
                        covariates.push(n.clone());
                    }
                }
                header = Some(names);
                continue;
            };
            if fields.len() != names.len() {
                return Err(src.error(
                    Span::new(line_start, line_start),
                    format!(
                        "{} fields, the header has {} columns",
                        fields.len(),
                        names.len()
                    ),
                ));
            }
            if let Some(c) = cols.c {
                let v = fields[c].0.trim();
                if !(v.is_empty() || v == "." || v == "0") {
                    continue;
                }
            }
            let num = |k: Option<usize>, what: &str| -> Result<Option<f64>, Diagnostic> {
                let Some(k) = k else { return Ok(None) };
                let (s, span) = &fields[k];
                let s = s.trim();
                if s.is_empty() || s == "." {
                    return Ok(None);
                }
                s.parse::<f64>()
                    .map(Some)
                    .map_err(|_| src.error(*span, format!("{what}: '{s}' is not a number")))
                    .and_then(|v| match v {
                        Some(x) if !x.is_finite() => {
                            Err(src.error(*span, format!("{what}: '{s}' is not finite")))
                        }
                        v => Ok(v),
                    })
            };
            let at =
                |k: Option<usize>| k.map_or(Span::new(line_start, line_start), |k| fields[k].1);
            let id_field = fields[cols.id.unwrap_or(0)].0.trim().to_string();
            if id_field.is_empty() || id_field == "." {
                return Err(src.error(at(cols.id), "missing ID"));
            }
            let Some(time) = num(cols.time, "TIME")? else {
                return Err(src.error(at(cols.time), "missing TIME"));
            };
            let amt = num(cols.amt, "AMT")?.unwrap_or(0.0);
            let whole =
                |k: Option<usize>, what: &str, lo: f64, hi: f64| -> Result<f64, Diagnostic> {
                    let v = num(k, what)?.unwrap_or(0.0);
                    if v.fract() != 0.0 || v < lo || v > hi {
                        return Err(src.error(
                            at(k),
                            format!("{what} must be a whole number in [{lo}, {hi}], got {v}"),
                        ));
                    }
                    Ok(v)
                };
            let evid = match num(cols.evid, "EVID")? {
                None if amt != 0.0 || num(cols.rate, "RATE")?.unwrap_or(0.0) != 0.0 => Evid::Dose,
                None => Evid::Observation,
                Some(_) => match whole(cols.evid, "EVID", 0.0, 4.0)? as u8 {
                    0 => Evid::Observation,
                    1 => Evid::Dose,
                    2 => Evid::Other,
                    3 => Evid::Reset,
                    _ => Evid::ResetDose,
                },
            };
            // MDV = 1 on a record that is not a dose: no observation (NM-TRAN's EVID 2).
            let missing_dv = whole(cols.mdv, "MDV", 0.0, 1.0)? == 1.0;
            let evid = match evid {
                Evid::Observation if missing_dv => Evid::Other,
                e => e,
            };
            let cmt = whole(cols.cmt, "CMT", -1e9, 1e9)? as i64;
            let ss = whole(cols.ss, "SS", 0.0, 2.0)? as u8;
            let ii = num(cols.ii, "II")?.unwrap_or(0.0);
            let addl = whole(cols.addl, "ADDL", 0.0, 1e7)? as u32;
            let rate = num(cols.rate, "RATE")?.unwrap_or(0.0);
            let dosing = matches!(evid, Evid::Dose | Evid::ResetDose);
            if ii < 0.0 {
                return Err(src.error(at(cols.ii), "II must not be negative"));
            }
            if dosing {
                if cmt <= 0 {
                    return Err(src.error(
                        at(cols.cmt),
                        "a dose record needs a compartment number CMT ≥ 1 (turning compartments off is not supported)",
                    ));
                }
                if amt < 0.0 {
                    return Err(src.error(at(cols.amt), "AMT must not be negative"));
                }
                if rate < 0.0 && rate != -1.0 && rate != -2.0 {
                    return Err(src.error(
                        at(cols.rate),
                        "RATE must be ≥ 0, or -1 (modelled rate) or -2 (modelled duration)",
                    ));
                }
                if addl > 0 && ii <= 0.0 {
                    return Err(src.error(at(cols.addl), "ADDL needs an interval II > 0"));
                }
                if ss > 0 && ii <= 0.0 && !(amt == 0.0 && rate > 0.0) {
                    return Err(src.error(
                        at(cols.ss),
                        "a steady-state dose needs II > 0 (or AMT = 0 with RATE > 0 for a steady-state infusion)",
                    ));
                }
                if ss == 2 && ii <= 0.0 {
                    return Err(src.error(
                        at(cols.ss),
                        "SS = 2 needs II > 0 (a steady-state infusion takes SS = 1)",
                    ));
                }
            }
            let mut cov = Vec::with_capacity(covariate_cols.len());
            for (&k, name) in covariate_cols.iter().zip(&covariates) {
                cov.push(num(Some(k), &name.to_ascii_uppercase())?.unwrap_or(f64::NAN));
            }
            let record = Record {
                time,
                evid,
                amt,
                cmt,
                ss,
                ii,
                addl,
                rate,
                dv: num(cols.dv, "DV")?,
                covariates: cov,
                line: i + 1,
                cmt_col: src.line_col(at(cols.cmt).start).1,
                rate_col: src.line_col(at(cols.rate).start).1,
                covariate_cols: covariate_cols
                    .iter()
                    .map(|&k| src.line_col(fields[k].1.start).1)
                    .collect(),
                row: rows,
            };
            rows += 1;
            match subjects.last_mut() {
                Some(s) if s.id == id_field => {
                    let prev = s.records.last().map_or(f64::NEG_INFINITY, |r| r.time);
                    if time < prev {
                        return Err(src.error(
                            at(cols.time),
                            format!(
                                "TIME {time} is before the previous record's ({prev}) of subject {}",
                                s.id
                            ),
                        ));
                    }
                    s.records.push(record);
                }
                _ => {
                    if subjects.iter().any(|s| s.id == id_field) {
                        return Err(src.error(
                            at(cols.id),
                            format!(
                                "the records of subject {id_field} are not contiguous (sort the dataset by ID, then TIME)"
                            ),
                        ));
                    }
                    subjects.push(Subject {
                        id: id_field,
                        records: vec![record],
                    });
                }
            }
        }
        if header.is_none() {
            return Err(src.error(Span::default(), "the dataset has no header row"));
        }
        Ok(Dataset {
            name: name.to_string(),
            covariates,
            subjects,
            rows,
        })
    }

    /// The subject with this ID.
    pub fn subject(&self, id: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.id == id)
    }
}

/// Column positions of the known items.
#[derive(Debug, Default)]
struct Cols {
    c: Option<usize>,
    id: Option<usize>,
    time: Option<usize>,
    evid: Option<usize>,
    amt: Option<usize>,
    cmt: Option<usize>,
    ss: Option<usize>,
    ii: Option<usize>,
    addl: Option<usize>,
    rate: Option<usize>,
    dv: Option<usize>,
    mdv: Option<usize>,
}

impl Cols {
    fn find(names: &[String]) -> Cols {
        let at = |n: &str| names.iter().position(|x| x == n);
        Cols {
            c: at("c"),
            id: at("id"),
            time: at("time"),
            evid: at("evid"),
            amt: at("amt"),
            cmt: at("cmt"),
            ss: at("ss"),
            ii: at("ii"),
            addl: at("addl"),
            rate: at("rate"),
            dv: at("dv"),
            mdv: at("mdv"),
        }
    }
}

/// Splits a line on commas (fields may be double-quoted) with each field's span.
fn split_fields(line: &str, base: usize) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, ch) in line.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push((
                    line[start..i].to_string(),
                    Span::new(base + start, base + i),
                ));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((
        line[start..].to_string(),
        Span::new(base + start, base + line.len()),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_case_insensitively_with_missing_values_and_comments() {
        let text = "C,Id,Time,Evid,Amt,Cmt,Rate,WT\n\
                    # a comment\n\
                    .,1,0,1,100,1,.,70\n\
                    C,1,0.5,0,.,2,.,70\n\
                    .,1,1,0,.,2,.,72.5\n\
                    .,2,0,1,50,1,10,.\n";
        let d = Dataset::parse("d.csv", text).unwrap();
        assert_eq!(d.covariates, vec!["wt"]);
        assert_eq!(d.subjects.len(), 2);
        assert_eq!(d.rows, 3);
        let r = &d.subjects[0].records;
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].evid, r[0].amt, r[0].cmt), (Evid::Dose, 100.0, 1));
        assert_eq!((r[1].time, r[1].covariates[0]), (1.0, 72.5));
        assert_eq!(r[1].line, 5);
        assert!(d.subjects[1].records[0].covariates[0].is_nan());
        assert_eq!(d.subjects[1].records[0].rate, 10.0);
        // The same file saved with a byte-order mark.
        // MDV = 1 on a record that is not a dose: an other-type event (EVID 2), with or without
        // an EVID column; on a dose it changes nothing.
        let mdv = Dataset::parse(
            "m.csv",
            "ID,TIME,AMT,CMT,MDV\n1,0,100,1,1\n1,1,.,1,1\n1,2,.,1,0\n1,3,.,1,.\n",
        )
        .unwrap();
        let evids: Vec<Evid> = mdv.subjects[0].records.iter().map(|r| r.evid).collect();
        assert_eq!(
            evids,
            [
                Evid::Dose,
                Evid::Other,
                Evid::Observation,
                Evid::Observation
            ]
        );
        let mdv = Dataset::parse("m.csv", "ID,TIME,EVID,MDV\n1,1,0,1\n").unwrap();
        assert_eq!(mdv.subjects[0].records[0].evid, Evid::Other);
        assert!(Dataset::parse("m.csv", "ID,TIME,MDV\n1,1,2\n").is_err());
        let bom = Dataset::parse("d.csv", &format!("\u{feff}{text}")).unwrap();
        assert_eq!(format!("{bom:?}"), format!("{d:?}"));
    }

    #[test]
    fn bad_records_are_located() {
        let cases = [
            (
                "ID,TIME,AMT\n1,0,x\n",
                "d.csv:2:5: AMT: 'x' is not a number",
            ),
            (
                "ID,AMT\n1,0\n",
                "d.csv:1:1: the header needs an ID and a TIME column",
            ),
            ("ID,TIME\n1,2\n1,1\n", "d.csv:3:3: TIME 1 is before"),
            (
                "ID,TIME,EVID,AMT\n1,0,1,10\n",
                "d.csv:2:1: a dose record needs a compartment",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,ADDL\n1,0,1,10,1,2\n",
                "d.csv:2:12: ADDL needs an interval",
            ),
            (
                "ID,TIME,EVID\n1,0,7\n",
                "d.csv:2:5: EVID must be a whole number in [0, 4]",
            ),
            (
                "ID,TIME\n1,0\n2,0\n1,1\n",
                "d.csv:4:1: the records of subject 1 are not contiguous",
            ),
            (
                "ID,TIME,X\n1,0\n",
                "d.csv:2:1: 2 fields, the header has 3 columns",
            ),
        ];
        for (text, want) in cases {
            let e = Dataset::parse("d.csv", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} does not start with {want}");
        }
    }
}
