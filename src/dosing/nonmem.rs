//! NONMEM-format event datasets: CSV with a header row, one record per line.
//!
//! Column names are case-insensitive. `ID` and `TIME` are required; `EVID`, `AMT`, `CMT`,
//! `SS`, `II`, `ADDL`, `RATE`, `DV` and `MDV` have their NONMEM meaning; every other column is a
//! covariate (time-varying: each record carries its value; between two records' times the
//! later record's value holds, as in NONMEM, or the earlier one's: [`Carry`]).
//! Columns without a name (R's row names, written by `write.csv` as the first column under
//! `""`, or a trailing comma) are not read.
//! TIME does not decrease within a subject, except at a reset (EVID 3 or 4), which may take it
//! back (a crossover's second period starting at 0 again).
//! IDs are numbers where they read as finite numbers (`1`, `1.0` and `01` are one subject, as
//! in NONMEM), text otherwise. `.`, `NA` and empty fields are missing values. Fields may be double-quoted (RFC 4180, as R's
//! `write.csv` writes character columns). Blank lines, lines starting with `#` or `@`, and
//! rows whose `C` column holds anything but `.`, `0` or nothing are comments; a dataset must
//! keep at least one record. An amount or rate on a record that gives no dose is refused, as
//! are a negative CMT (NONMEM's way to turn a compartment off) and a steady-state dose of
//! nothing (AMT 0 other than a steady-state infusion).
//!
//! This module reads and checks records; [`crate::backend::records`] gives them their meaning.

use crate::diag::{Diagnostic, SourceFile, Span};

/// Which record's covariate values hold between two records' times. A record's own outputs
/// and doses always take its own values; a missing value keeps the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carry {
    /// Next observation carried backward (NOCB), NONMEM's rule: over (t(j−1), t(j)] record
    /// j's values hold, so a change takes effect right after the record before it.
    #[default]
    Backward,
    /// Last observation carried forward (LOCF): record j−1's values hold until t(j), so a
    /// change takes effect at its own record.
    Forward,
}

impl Carry {
    /// The spellings a spec or a command line uses.
    pub const NAMES: [&'static str; 2] = ["nocb", "locf"];

    pub fn parse(name: &str) -> Option<Carry> {
        match name.to_ascii_lowercase().as_str() {
            "nocb" => Some(Carry::Backward),
            "locf" => Some(Carry::Forward),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Carry::Backward => "nocb",
            Carry::Forward => "locf",
        }
    }
}

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
    /// The ID as its first record writes it.
    pub id: String,
    pub records: Vec<Record>,
}

/// Of a subject's records so far, the line of a dose whose additional doses are still to come
/// after `now` (the time the records have reached), and the time of its last: an SS = 1 dose
/// cancels those of the doses before it, and a reset that took time back began anew (with
/// none pending: the parser's check).
fn additional_doses_after(records: &[Record], now: f64) -> Option<(usize, f64)> {
    let mut pending: Option<(usize, f64)> = None;
    let mut prev = f64::NEG_INFINITY;
    for r in records {
        if r.time < prev {
            pending = None;
        }
        prev = r.time;
        if !matches!(r.evid, Evid::Dose | Evid::ResetDose) {
            continue;
        }
        if r.ss == 1 {
            pending = None;
        }
        if r.addl > 0 {
            let last = r.time + f64::from(r.addl) * r.ii;
            if pending.is_none_or(|(_, t)| last > t) {
                pending = Some((r.line, last));
            }
        }
    }
    pending.filter(|&(_, last)| last > now)
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
        let text = crate::diag::read_text(path).map_err(|e| match e {
            crate::diag::ReadError::Text(d) => d,
            crate::diag::ReadError::Io(e) => Diagnostic {
                file: name.clone(),
                line: 0,
                col: 0,
                message: format!("cannot read the dataset: {e}"),
            },
        })?;
        Dataset::parse(&name, &text)
    }

    /// Parses a dataset; every error names the file, line and column.
    pub fn parse(name: &str, text: &str) -> Result<Dataset, Diagnostic> {
        // A byte-order mark, as spreadsheets write in UTF-8 CSV, is not part of the header.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Lines ended by a carriage return alone (the "CSV (Macintosh)" of spreadsheets) end
        // as others do, one byte for one, so that lines and columns count as in the file.
        let text = &*crate::diag::lone_crs_to_lf(text);
        let src = SourceFile::new(name, text);
        let mut offset = 0;
        let mut header: Option<Vec<String>> = None;
        let mut cols: Cols = Cols::default();
        let mut covariate_cols: Vec<usize> = Vec::new();
        let mut covariates: Vec<String> = Vec::new();
        let mut subjects: Vec<Subject> = Vec::new();
        let mut rows = 0;
        // Rows taken as comments by their C column, for the message when nothing else is left.
        let mut commented = 0;
        let mut header_line = 0;
        let mut errors: Vec<Diagnostic> = Vec::new();
        // Subjects met so far, by ID as compared, with the ID as first written; the last one's.
        let mut seen: std::collections::HashMap<IdKey, String> = std::collections::HashMap::new();
        let mut last_key: Option<IdKey> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let line_start = offset;
            offset += raw.len() + 1;
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('@') {
                continue;
            }
            let fields = split_fields(line, line_start)
                .map_err(|(at, why)| src.error(Span::new(line_start + at, line_start + at), why))?;
            let Some(names) = &header else {
                let names: Vec<String> = fields
                    .iter()
                    .map(|(s, _)| s.trim().to_ascii_lowercase())
                    .collect();
                for (k, n) in names.iter().enumerate() {
                    if !n.is_empty() && names[..k].contains(n) {
                        return Err(src.error(fields[k].1, format!("column '{n}' appears twice")));
                    }
                }
                cols = Cols::find(&names);
                if cols.id.is_none() || cols.time.is_none() {
                    // A file separated by something else reads as one column.
                    let other = [(';', "semicolons"), ('\t', "tabs"), ('|', "bars")]
                        .into_iter()
                        .find(|(c, _)| fields.len() == 1 && line.contains(*c));
                    let why = match other {
                        Some((_, by)) => format!(
                            "the header needs an ID and a TIME column (columns are separated by \
                             commas, and this header by {by})"
                        ),
                        None => "the header needs an ID and a TIME column".to_string(),
                    };
                    return Err(src.error(Span::new(line_start, line_start), why));
                }
                for (k, n) in names.iter().enumerate() {
                    // A column without a name (R's row names, a trailing comma) is not read.
                    if !KNOWN.contains(&n.as_str()) && n != "c" && !n.is_empty() {
                        covariate_cols.push(k);
                        covariates.push(n.clone());
                    }
                }
                header = Some(names);
                header_line = line_start;
                continue;
            };
            if fields.len() != names.len() {
                errors.push(src.error(
                    Span::new(line_start, line_start),
                    format!(
                        "{} fields, the header has {} columns",
                        fields.len(),
                        names.len()
                    ),
                ));
                continue;
            }
            if let Some(c) = cols.c {
                let v = fields[c].0.trim();
                if !(missing(v) || v == "0") {
                    commented += 1;
                    continue;
                }
            }
            // Each row's error is kept and the rows after it read on, so that one reading
            // reports every bad row (up to MAX_ERRORS).
            let mut row = || -> Result<(), Diagnostic> {
                let num = |k: Option<usize>, what: &str| -> Result<Option<f64>, Diagnostic> {
                    let Some(k) = k else { return Ok(None) };
                    let (s, span) = &fields[k];
                    let s = s.trim();
                    if missing(s) {
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
                if missing(&id_field) {
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
                let written_evid = match num(cols.evid, "EVID")? {
                    None => None,
                    Some(_) => Some(whole(cols.evid, "EVID", 0.0, 4.0)? as u8),
                };
                let evid = match written_evid {
                    None if amt != 0.0 || num(cols.rate, "RATE")?.unwrap_or(0.0) != 0.0 => {
                        Evid::Dose
                    }
                    None | Some(0) => Evid::Observation,
                    Some(1) => Evid::Dose,
                    Some(2) => Evid::Other,
                    Some(3) => Evid::Reset,
                    Some(_) => Evid::ResetDose,
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
                // An amount or a rate on a record that gives no dose would be dropped without a
                // word (a mistyped EVID loses a dose): refused, as NM-TRAN does. Without an EVID
                // column such a record is a dose, so this names the EVID as written.
                if !dosing {
                    let evid = written_evid.unwrap_or(0);
                    for (k, what, v) in [(cols.amt, "AMT", amt), (cols.rate, "RATE", rate)] {
                        if v != 0.0 {
                            return Err(src.error(
                                at(k),
                                format!(
                                    "{what} is {v} on a record that gives no dose (EVID {evid}): \
                                     make it a dose (EVID 1, or 4 to reset first) or leave {what} \
                                     0 or '.'"
                                ),
                            ));
                        }
                    }
                    // So would the additional doses and the steady state a dose's items ask for.
                    for (k, what, v) in [(cols.addl, "ADDL", addl), (cols.ss, "SS", ss as u32)] {
                        if v != 0 {
                            return Err(src.error(
                                at(k),
                                format!(
                                    "{what} is {v} on a record that gives no dose (EVID {evid}), \
                                     which gives no {}: make it a dose (EVID 1, or 4 to reset \
                                     first) or leave {what} 0 or '.'",
                                    match what {
                                        "ADDL" => "additional doses",
                                        _ => "steady state",
                                    }
                                ),
                            ));
                        }
                    }
                }
                // NONMEM turns compartment |CMT| off on a record with a negative CMT; no
                // backend can, and taking the record as it stands would leave the compartment on
                // without a word.
                if cmt < 0 && !dosing {
                    return Err(src.error(
                        at(cols.cmt),
                        format!(
                            "CMT {cmt} turns compartment {} off, which is not supported: leave \
                             CMT 0 or '.' on this record, or give the compartment it observes",
                            -cmt
                        ),
                    ));
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
                    // A steady-state dose of nothing: AMT 0 goes with SS only as a steady-state
                    // infusion (RATE > 0, II 0), as NONMEM's table of steady-state doses has it.
                    // Taken as it stands it would give nothing, and with SS = 1 its reset would
                    // wipe out the doses before it.
                    if amt == 0.0 && ss > 0 && rate >= 0.0 && !(rate > 0.0 && ii == 0.0) {
                        return Err(if rate > 0.0 {
                            src.error(
                                at(cols.ii),
                                format!(
                                    "II is {ii} on a steady-state dose (SS {ss}) with AMT 0 and \
                                     RATE {rate}, which gives nothing: give the amount of each \
                                     dose in AMT, or II 0 with SS = 1 for a steady-state \
                                     infusion at RATE"
                                ),
                            )
                        } else {
                            src.error(
                                at(cols.amt),
                                format!(
                                    "AMT is 0 on a steady-state dose (SS {ss}), which gives \
                                     nothing: give the amount of each dose in AMT (a \
                                     steady-state infusion takes AMT 0, RATE > 0 and II 0)"
                                ),
                            )
                        });
                    }
                    // An infusion of nothing (a steady-state infusion, AMT 0 with RATE > 0, needs SS).
                    if amt == 0.0 && rate != 0.0 && (ss == 0 || rate < 0.0) {
                        return Err(src.error(
                            at(cols.rate),
                            if rate > 0.0 {
                                format!(
                                    "RATE is {rate} on a dose with AMT 0 and SS 0, which gives \
                                     nothing: give the amount in AMT, or SS = 1 for a \
                                     steady-state infusion at RATE"
                                )
                            } else {
                                format!(
                                    "RATE is {rate} (a modelled {}) on a dose with AMT 0, which \
                                     gives nothing: give the amount in AMT (a steady-state \
                                     infusion, SS = 1 with AMT 0, takes its RATE > 0)",
                                    if rate == -1.0 { "rate" } else { "duration" }
                                )
                            },
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
                let key = IdKey::of(&id_field);
                match subjects.last_mut() {
                    Some(s) if last_key.as_ref() == Some(&key) => {
                        let prev = s.records.last().map_or(f64::NEG_INFINITY, |r| r.time);
                        // Time may go back at a reset (NONMEM: "the time may be any number"
                        // on reset and reset-and-dose records), when no additional dose of
                        // an earlier record is still to come. A record refused for its time
                        // is kept all the same, so that the records after it are judged
                        // against it and not reported for its error again.
                        let refused = if time >= prev {
                            None
                        } else if !matches!(evid, Evid::Reset | Evid::ResetDose) {
                            Some(format!(
                                "TIME {time} is before the previous record's ({prev}) of subject {}; \
                                 time may go back only at a reset (EVID 3 or 4)",
                                s.id
                            ))
                        } else {
                            additional_doses_after(&s.records, prev).map(|(line, last)| {
                                format!(
                                    "TIME goes back from {prev} to {time} at this reset while \
                                     additional doses of line {line} are still to come (the \
                                     last at {last}): end their ADDL before the reset, or \
                                     give them as records"
                                )
                            })
                        };
                        s.records.push(record);
                        if let Some(why) = refused {
                            return Err(src.error(at(cols.time), why));
                        }
                    }
                    _ => {
                        if let Some(first) = seen.get(&key) {
                            let same = if *first == id_field {
                                String::new()
                            } else {
                                format!(" (first written {first})")
                            };
                            return Err(src.error(
                                at(cols.id),
                                format!(
                                    "the records of subject {id_field}{same} are not contiguous (sort the dataset by ID, then TIME)"
                                ),
                            ));
                        }
                        seen.insert(key.clone(), id_field.clone());
                        last_key = Some(key);
                        subjects.push(Subject {
                            id: id_field,
                            records: vec![record],
                        });
                    }
                }
                Ok(())
            };
            if let Err(e) = row() {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(combined(errors));
        }
        if header.is_none() {
            return Err(src.error(Span::default(), "the dataset has no header row"));
        }
        if rows == 0 {
            let at = Span::new(header_line, header_line);
            return Err(src.error(
                at,
                if commented > 0 {
                    format!(
                        "the dataset has no records: all {commented} rows after the header are \
                         comments (a C column other than '.', '0' or empty)"
                    )
                } else {
                    "the dataset has no records after the header".to_string()
                },
            ));
        }
        Ok(Dataset {
            name: name.to_string(),
            covariates,
            subjects,
            rows,
        })
    }

    /// The subject with this ID, as records are grouped by it (`1.0` finds subject `1`).
    pub fn subject(&self, id: &str) -> Option<&Subject> {
        let key = IdKey::of(id.trim());
        self.subjects.iter().find(|s| IdKey::of(&s.id) == key)
    }
}

/// A subject's ID as records are grouped by it: NONMEM's IDs are numbers, so an ID that reads
/// as a finite number is that number (`1`, `1.0`, `01` and `1e0` are one subject); any other ID
/// is its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IdKey {
    /// The bits of the number, −0 as 0.
    Number(u64),
    Text(String),
}

impl IdKey {
    fn of(id: &str) -> IdKey {
        match id.parse::<f64>() {
            Ok(x) if x.is_finite() => IdKey::Number(if x == 0.0 { 0 } else { x.to_bits() }),
            _ => IdKey::Text(id.to_string()),
        }
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

/// A missing value: an empty field, `.` (NONMEM's), or `NA` (R's, as `write.csv` writes it).
/// The most bad rows one reading of a dataset lists.
pub const MAX_ERRORS: usize = 20;

/// The first [`MAX_ERRORS`] of a dataset's row errors, then a line with how many more there
/// were.
pub fn first_errors(errors: Vec<String>) -> Vec<String> {
    let more = errors.len().saturating_sub(MAX_ERRORS);
    let mut listed: Vec<String> = errors.into_iter().take(MAX_ERRORS).collect();
    if more > 0 {
        listed.push(format!("… and {more} more rows with errors"));
    }
    listed
}

/// The errors of a dataset's rows as one: the first located as itself, the others (at most
/// [`MAX_ERRORS`] in all) listed after it, one per line, with how many more there were.
fn combined(mut errors: Vec<Diagnostic>) -> Diagnostic {
    let rest: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let mut first = errors.swap_remove(0);
    for r in first_errors(rest).iter().skip(1) {
        first.message.push('\n');
        first.message.push_str(r);
    }
    first
}

fn missing(s: &str) -> bool {
    s.is_empty() || s == "." || s == "NA"
}

/// A field as a CSV file holds it (RFC 4180), read back by [`Dataset::parse`] as the same text:
/// quoted, with each quote doubled, when it holds a comma, a quote or a line break, or starts
/// with `#` or `@` (a line starting so is a comment); as it is otherwise.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    let quoted = s.contains([',', '"', '\r', '\n']) || s.starts_with(['#', '@']);
    if quoted {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Splits a line on commas into fields with their spans (`base` is the line's offset in the
/// file). A field may be double-quoted as in RFC 4180, as R's `write.csv` and spreadsheets
/// write character columns: the quotes are removed, a doubled quote inside stands for one, and
/// commas inside are part of the field. The span covers the field as written, quotes included.
/// A quoted field must close on its line (no record spans lines) and be followed by its comma;
/// a quote inside an unquoted field is kept as it is.
fn split_fields(line: &str, base: usize) -> Result<Vec<(String, Span)>, (usize, &'static str)> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rest = &line[start..];
        let lead = rest.len() - rest.trim_start().len();
        let (value, end) = if rest[lead..].starts_with('"') {
            let open = start + lead;
            let mut value = String::new();
            let mut chars = line[open + 1..].char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err((open, "this quoted field is not closed on its line")),
                    Some((i, '"')) => {
                        if line[open + 1 + i + 1..].starts_with('"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break open + 1 + i + 1;
                        }
                    }
                    Some((_, ch)) => value.push(ch),
                }
            };
            let after = line[close..].find(',').map_or(line.len(), |k| close + k);
            if !line[close..after].trim().is_empty() {
                return Err((close, "text after a quoted field's closing quote"));
            }
            (value, after)
        } else {
            let end = rest.find(',').map_or(line.len(), |k| start + k);
            (line[start..end].to_string(), end)
        };
        out.push((value, Span::new(base + start, base + end)));
        if end == line.len() {
            return Ok(out);
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_without_a_name_are_not_read() {
        // R's write.csv: row names first under "", every character field quoted; and a
        // trailing comma.
        let d = Dataset::parse(
            "d.csv",
            "\"\",\"ID\",\"TIME\",\"EVID\",\"AMT\",\"CMT\",\"WT\",\n\
             \"1\",1,0,1,100,1,70,\n\"2\",1,1,0,NA,1,72,\n",
        )
        .unwrap();
        assert_eq!(d.covariates, vec!["wt"]);
        let r = &d.subjects[0].records;
        assert_eq!((r[1].time, r[1].covariates[0]), (1.0, 72.0));
    }

    #[test]
    fn time_goes_back_only_at_a_reset_with_no_additional_dose_to_come() {
        // A crossover: the second period's reset-and-dose (EVID 4) and a reset (EVID 3) at
        // earlier times; the first period's additional doses end at 12, before the reset.
        let ok = "ID,TIME,EVID,AMT,CMT,II,ADDL,SS\n\
                  1,0,1,100,1,12,1,0\n1,18,0,.,1,.,.,.\n1,0,4,50,1,.,.,.\n1,8,0,.,1,.,.,.\n\
                  1,2,3,.,1,.,.,.\n1,3,0,.,1,.,.,.\n";
        let d = Dataset::parse("d.csv", ok).unwrap();
        let times: Vec<f64> = d.subjects[0].records.iter().map(|r| r.time).collect();
        assert_eq!(times, [0.0, 18.0, 0.0, 8.0, 2.0, 3.0]);
        // Back at an observation.
        let e = Dataset::parse(
            "d.csv",
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,5,0,.,1\n1,4,0,.,1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("d.csv:4:3: TIME 4 is before the previous record's (5) of subject 1; time may go back only at a reset (EVID 3 or 4)"),
            "{e}"
        );
        // Back at a reset while doses every 12 h until 36 are still to come; the records
        // after it, in order from its time, are not reported.
        let pending = "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,12,3\n1,20,0,.,1,.,.\n\
                       1,0,4,50,1,.,.\n1,5,0,.,1,.,.\n1,10,0,.,1,.,.\n";
        let e = Dataset::parse("d.csv", pending).unwrap_err().to_string();
        assert!(
            e.contains("d.csv:4:3: TIME goes back from 20 to 0 at this reset while additional doses of line 2 are still to come (the last at 36)"),
            "{e}"
        );
        assert_eq!(e.matches("TIME").count(), 1, "{e}");
        // An SS = 1 dose cancels them; a reset that took time back began anew.
        for text in [
            "ID,TIME,EVID,AMT,CMT,II,ADDL,SS\n1,0,1,100,1,12,3,0\n1,20,1,50,1,12,0,1\n1,0,4,50,1,.,.,.\n",
            "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,12,3\n1,40,0,.,1,.,.\n1,0,3,.,1,.,.\n1,5,0,.,1,.,.\n1,1,3,.,1,.,.\n",
        ] {
            Dataset::parse("d.csv", text).unwrap();
        }
    }

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
        // Lines ended by CRLF or by CR alone read as those ended by LF.
        for end in ["\r\n", "\r"] {
            let other = Dataset::parse("d.csv", &text.replace('\n', end)).unwrap();
            assert_eq!(format!("{other:?}"), format!("{d:?}"), "{end:?}");
        }
    }

    /// A dataset as R's `write.csv(na = ".")` writes it: header and character columns quoted.
    #[test]
    fn quoted_fields_are_read_as_rfc_4180_defines_them() {
        let text = "\"C\",\"ID\",\"TIME\",\"AMT\",\"CMT\",\"DV\",\"SITE\"\n\
                    \".\",\"1\",0,\"100\",1,.,7\n\
                    \".\",\"1\",1,.,2,2.1, \"8\" \n\
                    \"C\",1,8,.,2,9.9,7\n\
                    \"0\",\"a \"\"b\"\", c\",2,.,2,,\n";
        let d = Dataset::parse("r.csv", text).unwrap();
        assert_eq!(d.covariates, vec!["site"]);
        assert_eq!(d.rows, 3);
        let r = &d.subjects[0].records;
        assert_eq!((r[0].evid, r[0].amt, r[0].cmt), (Evid::Dose, 100.0, 1));
        assert_eq!((r[1].dv, r[1].covariates[0]), (Some(2.1), 8.0));
        // A doubled quote is one quote; a comma inside quotes belongs to the field.
        assert_eq!(d.subjects[1].id, "a \"b\", c");
        // Columns still count characters of the line as written.
        let e = Dataset::parse("r.csv", "\"ID\",\"TIME\",\"AMT\"\n\"1\",\"0\",\"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.csv:2:9: AMT: 'x' is not a number"), "{e}");
    }

    /// A dataset as R's `write.csv` writes it by default: missing values as `NA`, in the C
    /// column too; the same records as with `.`.
    #[test]
    fn r_missing_values_are_missing() {
        let dots = "\"C\",\"ID\",\"TIME\",\"AMT\",\"CMT\",\"DV\",\"WT\"\n\
                    .,\"1\",0,100,1,.,70\n\
                    .,\"1\",1,.,2,2.1,.\n\
                    \"C\",\"1\",2,.,2,9.9,.\n";
        let nas = "\"C\",\"ID\",\"TIME\",\"AMT\",\"CMT\",\"DV\",\"WT\"\n\
                   NA,\"1\",0,100,1,NA,70\n\
                   NA,\"1\",1,NA,2,2.1,NA\n\
                   \"C\",\"1\",2,NA,2,9.9,NA\n";
        let (a, b) = (
            Dataset::parse("d.csv", dots).unwrap(),
            Dataset::parse("d.csv", nas).unwrap(),
        );
        assert_eq!(b.rows, 2);
        // The same records but for where their fields stand on the line.
        let values = |d: &Dataset| -> Vec<String> {
            d.subjects[0]
                .records
                .iter()
                .map(|r| {
                    format!(
                        "{} {:?} {} {} {:?} {:?}",
                        r.time, r.evid, r.amt, r.cmt, r.dv, r.covariates
                    )
                })
                .collect()
        };
        assert_eq!(values(&a), values(&b));
        assert!(b.subjects[0].records[1].covariates[0].is_nan());
    }

    /// What a dataset may still hold on records that give no dose, and steady-state infusions.
    #[test]
    fn zero_amounts_off_doses_and_steady_state_infusions_are_accepted() {
        let text = "ID,TIME,EVID,AMT,CMT,RATE,SS,MDV\n\
                    1,0,1,0,1,10,1,0\n\
                    1,1,0,0,1,0,0,0\n\
                    1,2,2,.,1,.,.,1\n\
                    1,3,3,0,.,0,0,1\n\
                    1,4,0,.,1,.,.,1\n";
        let d = Dataset::parse("d.csv", text).unwrap();
        let evids: Vec<Evid> = d.subjects[0].records.iter().map(|r| r.evid).collect();
        assert_eq!(
            evids,
            [
                Evid::Dose,
                Evid::Observation,
                Evid::Other,
                Evid::Reset,
                Evid::Other
            ]
        );
    }

    /// What `csv_field` writes reads back as the same text, alone and as a subject's ID.
    #[test]
    fn written_fields_read_back_as_written() {
        let texts = [
            "A, site 2",
            "a \"b\", c",
            "\"",
            "\"\"",
            ",",
            "#3",
            "@x",
            "x#",
            "plain",
            "",
        ];
        for t in texts {
            let line = format!("{},{}", csv_field(t), csv_field(t));
            let fields = split_fields(&line, 0).unwrap();
            let read: Vec<&str> = fields.iter().map(|(s, _)| s.as_str()).collect();
            assert_eq!(read, [t, t], "{line}");
        }
        assert_eq!(csv_field("A, site 2"), "\"A, site 2\"");
        assert_eq!(csv_field("a \"b\""), "\"a \"\"b\"\"\"");
        assert_eq!(csv_field("12"), "12");
        let ids = &texts[..texts.len() - 1];
        let text: String = ids
            .iter()
            .map(|id| format!("{},0\n", csv_field(id)))
            .collect();
        let d = Dataset::parse("w.csv", &format!("ID,TIME\n{text}")).unwrap();
        let read: Vec<&str> = d.subjects.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(read, ids);
    }

    /// IDs that read as the same finite number are one subject, named as first written; text
    /// IDs, and IDs that read as no finite number, are compared as text.
    #[test]
    fn ids_that_are_the_same_number_are_one_subject() {
        let d = Dataset::parse(
            "d.csv",
            "ID,TIME\n1,0\n1.0,1\n01,2\n1e0,3\n-0,0\n0,1\nA,0\na,0\nNaN,0\nnan,0\n2,0\n",
        )
        .unwrap();
        let subjects: Vec<(&str, usize)> = d
            .subjects
            .iter()
            .map(|s| (s.id.as_str(), s.records.len()))
            .collect();
        assert_eq!(
            subjects,
            [
                ("1", 4),
                ("-0", 2),
                ("A", 1),
                ("a", 1),
                ("NaN", 1),
                ("nan", 1),
                ("2", 1)
            ]
        );
        assert_eq!(d.subject("1.000").map(|s| s.id.as_str()), Some("1"));
        assert_eq!(d.subject(" 02 ").map(|s| s.id.as_str()), Some("2"));
        assert!(d.subject("1.5").is_none());
        let e = Dataset::parse("d.csv", "ID,TIME\n1,0\n2,0\n1.0,1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "d.csv:4:1: the records of subject 1.0 (first written 1) are not contiguous (sort \
             the dataset by ID, then TIME)"
        );
    }

    #[test]
    fn every_bad_row_is_reported_at_once() {
        let text = "ID,TIME,AMT\n1,0,x\n1,1,5,9\n1,2,10\n1,y,1\n";
        let e = Dataset::parse("d.csv", text).unwrap_err().to_string();
        assert_eq!(
            e,
            "d.csv:2:5: AMT: 'x' is not a number\nd.csv:3:1: 4 fields, the header has 3 \
             columns\nd.csv:4:1: a dose record needs a compartment number CMT ≥ 1 (turning \
             compartments off is not supported)\nd.csv:5:3: TIME: 'y' is not a number"
        );
        // At most MAX_ERRORS rows listed, with how many more.
        let many: String = (0..30).map(|i| format!("1,{i},x\n")).collect();
        let e = Dataset::parse("d.csv", &format!("ID,TIME,AMT\n{many}"))
            .unwrap_err()
            .to_string();
        assert_eq!(e.lines().count(), MAX_ERRORS + 1, "{e}");
        assert!(e.ends_with("… and 10 more rows with errors"), "{e}");
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
            (
                "ID;TIME;AMT\n1;0;1\n",
                "d.csv:1:1: the header needs an ID and a TIME column (columns are separated by \
                 commas, and this header by semicolons)",
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
            // An amount or a rate on a record that gives no dose (a mistyped EVID).
            (
                "ID,TIME,EVID,AMT,CMT\n1,0,0,100,1\n",
                "d.csv:2:7: AMT is 100 on a record that gives no dose (EVID 0): make it a dose",
            ),
            (
                "ID,TIME,EVID,AMT,CMT\n1,0,2,100,1\n",
                "d.csv:2:7: AMT is 100 on a record that gives no dose (EVID 2)",
            ),
            (
                "ID,TIME,EVID,AMT,CMT\n1,0,3,-5,1\n",
                "d.csv:2:7: AMT is -5 on a record that gives no dose (EVID 3)",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,MDV\n1,0,0,100,1,1\n",
                "d.csv:2:7: AMT is 100 on a record that gives no dose (EVID 0)",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,RATE\n1,0,0,.,1,10\n",
                "d.csv:2:11: RATE is 10 on a record that gives no dose (EVID 0)",
            ),
            // Lines ended by CR alone are lines: the error is located on its line.
            (
                "ID,TIME,EVID,AMT,CMT\r1,0,1,100,1\r1,1,0,x,2\r",
                "d.csv:3:7: AMT: 'x' is not a number",
            ),
            // Additional doses or a steady state asked for on a record that gives no dose.
            (
                "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,.,.\n1,1,0,.,2,12,3\n",
                "d.csv:3:14: ADDL is 3 on a record that gives no dose (EVID 0), which gives no additional doses",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,SS,II\n1,0,2,.,1,1,12\n",
                "d.csv:2:11: SS is 1 on a record that gives no dose (EVID 2), which gives no steady state",
            ),
            // An infusion of nothing: RATE with AMT 0 and no steady state.
            (
                "ID,TIME,AMT,CMT,RATE\n1,0,0,1,10\n",
                "d.csv:2:9: RATE is 10 on a dose with AMT 0 and SS 0, which gives nothing",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,RATE\n1,0,1,.,1,-2\n",
                "d.csv:2:11: RATE is -2 (a modelled duration) on a dose with AMT 0, which gives nothing: give the amount in AMT",
            ),
            // A steady-state dose of nothing: AMT 0 is a steady-state infusion only with RATE
            // > 0 and II 0 (NONMEM's table of steady-state doses).
            (
                "ID,TIME,EVID,AMT,CMT,SS,II,RATE\n1,6,1,0,1,1,12,10\n",
                "d.csv:2:13: II is 12 on a steady-state dose (SS 1) with AMT 0 and RATE 10, \
                 which gives nothing",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,SS,II,RATE\n1,0,1,0,1,2,12,10\n",
                "d.csv:2:13: II is 12 on a steady-state dose (SS 2) with AMT 0 and RATE 10",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,SS,II,RATE\n1,0,1,0,1,1,12,0\n",
                "d.csv:2:7: AMT is 0 on a steady-state dose (SS 1), which gives nothing",
            ),
            (
                "ID,TIME,EVID,AMT,CMT,SS,II,RATE\n1,0,1,.,1,1,12,-2\n",
                "d.csv:2:16: RATE is -2 (a modelled duration) on a dose with AMT 0",
            ),
            // A negative CMT turns a compartment off in NONMEM, on any record.
            (
                "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,1,2,.,-1\n",
                "d.csv:3:9: CMT -1 turns compartment 1 off, which is not supported",
            ),
            (
                "ID,TIME,EVID,CMT\n1,1,0,-2\n",
                "d.csv:2:7: CMT -2 turns compartment 2 off",
            ),
            (
                "ID,TIME,EVID,CMT\n1,1,3,-1\n",
                "d.csv:2:7: CMT -1 turns compartment 1 off",
            ),
            (
                "ID,TIME,EVID,AMT,CMT\n1,0,1,100,-1\n",
                "d.csv:2:11: a dose record needs a compartment number CMT ≥ 1",
            ),
            // Quoting: an unclosed quote, text after a closing quote, a quoted number that is
            // not one (located at the field, its quote).
            (
                "ID,TIME,AMT\n1,0,\"100\n",
                "d.csv:2:5: this quoted field is not closed on its line",
            ),
            (
                "ID,TIME,AMT\n1,0,\"100\"x,\n",
                "d.csv:2:10: text after a quoted field's closing quote",
            ),
            (
                "\"ID\",\"TIME\",\"AMT\"\n\"1\",\"0\",\"1,5\"\n",
                "d.csv:2:9: AMT: '1,5' is not a number",
            ),
            // No records: every row a comment, or none after the header.
            (
                "C,ID,TIME\nC,1,0\n\"C\",1,1\n",
                "d.csv:1:1: the dataset has no records: all 2 rows after the header are comments",
            ),
            (
                "# a comment\nID,TIME\n\n",
                "d.csv:2:1: the dataset has no records after the header",
            ),
        ];
        for (text, want) in cases {
            let e = Dataset::parse("d.csv", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} does not start with {want}");
        }
    }
}
