//! Per-subject result rows → Arrow record batches (one batch per arm and chunk).
//!
//! Row layout: `subject_id`, `arm`, covariates, sampled parameters (opt-in), one column per
//! metric (`<output>_<metric>`, null where a subject failed or the metric is undefined),
//! `status`, and optional profiles (`<output>_profile`, fixed-size lists of f32 or f16).

use std::sync::Arc;

use arrow_array::types::{UInt16Type, UInt8Type};
use arrow_array::{
    ArrayRef, DictionaryArray, FixedSizeListArray, Float16Array, Float32Array, Float64Array,
    RecordBatch, StringArray, UInt16Array, UInt64Array, UInt8Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::backend::OutputView;
use crate::solver::Status;

/// Status labels in code order ([`Status::name`] of each code).
pub const STATUS_LABELS: [&str; 5] = [
    "ok",
    "max_steps",
    "step_too_small",
    "non_finite",
    "no_steady_state",
];

/// A covariate column: numeric, or categorical with labels for its integer codes.
#[derive(Debug, Clone, PartialEq)]
pub struct CovariateColumn {
    pub name: String,
    pub labels: Option<Vec<String>>,
}

/// The columns of a trial's output and how to fill them.
#[derive(Debug, Clone)]
pub struct RowLayout {
    pub schema: SchemaRef,
    pub arms: Vec<String>,
    pub covariates: Vec<CovariateColumn>,
    pub parameters: Vec<String>,
    pub metrics: Vec<String>,
    pub profile_outputs: Vec<String>,
    pub n_times: usize,
    /// The sampling times (for messages; empty where not known).
    pub times: Vec<f64>,
    pub profile_f16: bool,
    /// Outputs with simulated observations (`<output>_obs`).
    pub observations: Vec<String>,
}

fn dict(key: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8))
}

/// What a trial's output rows hold (see [`RowLayout::new`]).
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub arms: Vec<String>,
    pub covariates: Vec<CovariateColumn>,
    pub parameters: Vec<String>,
    pub metrics: Vec<String>,
    pub profile_outputs: Vec<String>,
    pub n_times: usize,
    /// The sampling times, `n_times` of them, for messages (may be left empty).
    pub times: Vec<f64>,
    pub profile_f16: bool,
    pub observations: Vec<String>,
}

impl RowLayout {
    pub fn new(columns: Columns) -> RowLayout {
        let Columns {
            arms,
            covariates,
            parameters,
            metrics,
            profile_outputs,
            n_times,
            times,
            profile_f16,
            observations,
        } = columns;
        let mut fields = vec![
            Field::new("subject_id", DataType::UInt64, false),
            Field::new("arm", dict(DataType::UInt16), false),
        ];
        for c in &covariates {
            let dt = if c.labels.is_some() {
                dict(DataType::UInt16)
            } else {
                DataType::Float64
            };
            fields.push(Field::new(&c.name, dt, true));
        }
        fields.extend(
            parameters
                .iter()
                .map(|p| Field::new(p, DataType::Float64, true)),
        );
        fields.extend(
            metrics
                .iter()
                .map(|m| Field::new(m, DataType::Float64, true)),
        );
        fields.push(Field::new("status", dict(DataType::UInt8), false));
        let item = if profile_f16 {
            DataType::Float16
        } else {
            DataType::Float32
        };
        for o in profile_outputs.iter().filter(|_| n_times > 0) {
            let list = DataType::FixedSizeList(
                Arc::new(Field::new("item", item.clone(), true)),
                n_times as i32,
            );
            fields.push(Field::new(format!("{o}_profile"), list, true));
        }
        let observations: Vec<String> = if n_times == 0 {
            Vec::new()
        } else {
            observations
        };
        for o in &observations {
            let list = DataType::FixedSizeList(
                Arc::new(Field::new("item", item.clone(), true)),
                n_times as i32,
            );
            fields.push(Field::new(format!("{o}_obs"), list, true));
        }
        RowLayout {
            schema: Arc::new(Schema::new(fields)),
            arms,
            covariates,
            parameters,
            metrics,
            profile_outputs: if n_times == 0 {
                Vec::new()
            } else {
                profile_outputs
            },
            n_times,
            times,
            profile_f16,
            observations,
        }
    }

    /// The columns of a chunk's `n` subjects that every arm's rows share, built once for all
    /// arms ([`RowLayout::encode`]): covariates, then the parameters written. `covariates[c][i]`,
    /// `parameters[p][i]` for subject i of the chunk; categorical covariates hold their integer
    /// codes. Numeric columns become Arrow's without a copy.
    pub fn subject_columns(
        &self,
        covariates: Vec<Vec<f64>>,
        parameters: Vec<Vec<f64>>,
        n: usize,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        let numeric = |v: Vec<f64>| -> ArrayRef {
            let len = v.len().min(n);
            Arc::new(Float64Array::new(v.into(), None).slice(0, len))
        };
        let mut covariates = covariates.into_iter();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.covariates.len());
        for spec in &self.covariates {
            let values = covariates.next().unwrap_or_default();
            match &spec.labels {
                Some(labels) => {
                    let keys: UInt16Array = values
                        .iter()
                        .take(n)
                        .map(|&x| crate::population::category_code(x, labels.len()))
                        .collect();
                    let dict = Arc::new(StringArray::from(labels.clone()));
                    cols.push(Arc::new(DictionaryArray::<UInt16Type>::try_new(
                        keys, dict,
                    )?));
                }
                None => cols.push(numeric(values)),
            }
        }
        cols.extend(
            parameters
                .into_iter()
                .take(self.parameters.len())
                .map(numeric),
        );
        Ok(cols)
    }

    /// One arm's rows of a chunk: `subject` holds the columns its arms share
    /// ([`RowLayout::subject_columns`]).
    pub fn encode(
        &self,
        arm: usize,
        first_subject: u64,
        subject: &[ArrayRef],
        out: &OutputView<'_>,
        observations: &[Vec<f64>],
    ) -> Result<RecordBatch, ArrowError> {
        let n = out.status.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        cols.push(Arc::new(UInt64Array::from_iter_values(
            first_subject..first_subject + n as u64,
        )));
        let arm_keys = UInt16Array::from(vec![arm as u16; n]);
        let arm_values = Arc::new(StringArray::from(self.arms.clone()));
        cols.push(Arc::new(DictionaryArray::<UInt16Type>::try_new(
            arm_keys, arm_values,
        )?));
        cols.extend(subject.iter().cloned());
        for values in out.metrics.iter().take(self.metrics.len()) {
            cols.push(Arc::new(finite_or_null(values)));
        }
        let status_keys = UInt8Array::from(
            out.status
                .iter()
                .map(|&s| s.min(Status::NonFinite as u8))
                .collect::<Vec<u8>>(),
        );
        cols.push(Arc::new(DictionaryArray::<UInt8Type>::try_new(
            status_keys,
            Arc::new(StringArray::from(STATUS_LABELS.to_vec())),
        )?));
        let lists = self
            .profile_outputs
            .iter()
            .zip(&out.profiles)
            .map(|(name, v)| (format!("{name}_profile"), *v))
            .chain(
                self.observations
                    .iter()
                    .zip(observations)
                    .map(|(name, v)| (format!("{name}_obs"), v.as_slice())),
            );
        for (field, values) in lists {
            cols.push(self.list_column(&field, values).map_err(|i| match i {
                ListError::Arrow(e) => e,
                ListError::F16Overflow(i) => {
                    self.f16_overflow(&field, arm, first_subject, values, i)
                }
            })?);
        }
        RecordBatch::try_new(self.schema.clone(), cols)
    }

    /// The error of a finite value beyond f16's range, `values[i]` of a list column (with how
    /// many more the column has in this batch): f16 would hold it as infinite, which is neither
    /// the value nor the null that stands for a value that is not finite, so the run stops
    /// rather than write it.
    fn f16_overflow(
        &self,
        field: &str,
        arm: usize,
        first_subject: u64,
        values: &[f64],
        i: usize,
    ) -> ArrowError {
        let value = values[i];
        let nt = self.n_times.max(1);
        let k = i % nt;
        let at = match self.times.get(k) {
            Some(t) => format!("at t = {t} (sampling time {} of {nt})", k + 1),
            None => format!("at its sampling time {} of {nt}", k + 1),
        };
        let beyond = values
            .iter()
            .filter(|&&v| v.is_finite() && f16_nearest(v).is_infinite())
            .count();
        let more = match beyond {
            0 | 1 => String::new(),
            n => format!(" (one of {n} such values of this arm's rows in this part)"),
        };
        ArrowError::InvalidArgumentError(format!(
            "{field} of subject {} in arm '{}' is {value:.6e} {at}, beyond the largest value \
             profiles in f16 hold ({F16_MAX}){more}: f16 would make it infinite, so nothing \
             more is written. Write the profiles in f32 (`profile = {{ ..., precision = \
             \"f32\" }}` in [output]; values up to 3.4e38, about 7 significant digits) or give \
             the output in larger units, and run again with --overwrite",
            first_subject + (i / nt) as u64,
            self.arms.get(arm).map_or("?", |a| a.as_str()),
        ))
    }

    /// A fixed-size-list column (f32 or f16 items; non-finite values become nulls). A finite
    /// value beyond f16's range is refused in f16 ([`ListError::F16Overflow`]); in f32, one
    /// beyond f32's range (3.4e38) is written as infinite.
    fn list_column(&self, field: &str, values: &[f64]) -> Result<ArrayRef, ListError> {
        let idx = self.schema.index_of(field)?;
        let DataType::FixedSizeList(item, size) = self.schema.field(idx).data_type() else {
            return Err(ListError::Arrow(ArrowError::SchemaError(format!(
                "{field} is not a list column"
            ))));
        };
        // Converted whole, with the validity packed (none where every value is finite).
        let nulls = finite(values);
        let items: ArrayRef = if self.profile_f16 {
            let mut overflow = false;
            let v: Vec<half::f16> = values
                .iter()
                .map(|&x| {
                    let h = f16_nearest(x);
                    overflow |= h.is_infinite() & x.is_finite();
                    h
                })
                .collect();
            if overflow {
                let i = v
                    .iter()
                    .zip(values)
                    .position(|(h, x)| h.is_infinite() && x.is_finite())
                    .unwrap_or(0);
                return Err(ListError::F16Overflow(i));
            }
            Arc::new(Float16Array::new(v.into(), nulls))
        } else {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            Arc::new(Float32Array::new(v.into(), nulls))
        };
        Ok(Arc::new(FixedSizeListArray::try_new(
            item.clone(),
            *size,
            items,
            None,
        )?))
    }
}

/// The largest finite f16 value.
pub const F16_MAX: f64 = 65504.0;

/// Why a list column was not built.
#[derive(Debug)]
enum ListError {
    Arrow(ArrowError),
    /// The values' index of the first finite value beyond f16's range.
    F16Overflow(usize),
}

impl From<ArrowError> for ListError {
    fn from(e: ArrowError) -> Self {
        ListError::Arrow(e)
    }
}

/// `x` rounded once to the nearest half-precision value (ties to even). `half`'s own
/// conversion from f64 goes through f32 (or drops the low bits of the significand first), which
/// rounds twice: 1692.5000036 became 1692, not 1693. Here x is first rounded to f32 *to odd*
/// (toward zero, the last bit set where inexact), which keeps enough of x for the rounding to
/// f16 to be the one rounding of x itself (S. Boldo, G. Melquiond, "Emulation of FMA and
/// correctly rounded sums: proved algorithms using rounding to odd", IEEE Trans. Computers
/// 57(4), 2008: rounding to odd with p + 2 bits or more, then to p bits, is correct rounding).
pub fn f16_nearest(x: f64) -> half::f16 {
    let r = x as f32;
    if !r.is_finite() || f64::from(r) == x {
        return half::f16::from_f32(r);
    }
    // Toward zero: one step back where rounding to nearest went past x.
    let bits = if f64::from(r).abs() > x.abs() {
        r.to_bits() - 1
    } else {
        r.to_bits()
    };
    half::f16::from_f32(f32::from_bits(bits | 1))
}

/// A metric column: the values, with a null where one is not finite (a failed subject, an
/// undefined metric). The values are copied whole and the validity packed 64 at a time; a
/// column with every value finite has no validity at all.
fn finite_or_null(values: &[f64]) -> Float64Array {
    Float64Array::new(values.to_vec().into(), finite(values))
}

/// The validity of values that are null where not finite: `None` where all are finite.
fn finite(values: &[f64]) -> Option<NullBuffer> {
    values.iter().any(|v| !v.is_finite()).then(|| {
        NullBuffer::new(BooleanBuffer::collect_bool(values.len(), |i| {
            values[i].is_finite()
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ChunkOutput;
    use arrow_array::Array;

    /// The status column's dictionary holds every status's name at its code, and nothing
    /// past the last code.
    #[test]
    fn status_labels_are_the_statuses_names() {
        for (code, label) in STATUS_LABELS.iter().enumerate() {
            assert_eq!(Status::from_code(code as u8).unwrap().name(), *label);
        }
        assert_eq!(Status::from_code(STATUS_LABELS.len() as u8), None);
    }

    #[test]
    fn half_floats_are_rounded_once() {
        // Values that rounding through f32 first gets wrong.
        assert_eq!(f16_nearest(1692.5000036).to_f64(), 1693.0);
        assert_eq!(f16_nearest(0.39636230415).to_f64(), 0.396240234375);
        assert_eq!(f16_nearest(-1692.5000036).to_f64(), -1693.0);
        // Ties to even, overflow, tiny values, signed zeros.
        assert_eq!(f16_nearest(1692.5).to_f64(), 1692.0);
        assert_eq!(f16_nearest(1693.5).to_f64(), 1694.0);
        assert_eq!(f16_nearest(1e6).to_f64(), f64::INFINITY);
        assert_eq!(f16_nearest(1e-300).to_bits(), 0);
        assert_eq!(f16_nearest(-1e-300).to_bits(), 0x8000);
        assert!(f16_nearest(f64::NAN).is_nan());
        // Against the definition: x lies on the chosen value's side of the midpoint to each
        // neighbour (exact in f64), or on it with an even choice; over the whole f16 range,
        // with values next to the midpoints.
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state = crate::population::rng::splitmix64(state);
            state
        };
        let f16_at = |bits: u16| half::f16::from_bits(bits).to_f64();
        for _ in 0..200_000 {
            let r = next();
            let bits = (r % 0x7bff) as u16;
            let (a, b) = (f16_at(bits), f16_at(bits + 1));
            let mid = 0.5 * (a + b);
            let x = match r >> 62 {
                0 => mid,
                1 => f64::from_bits(mid.to_bits() + 1 + (r >> 40) % 8),
                2 => f64::from_bits(mid.to_bits() - 1 - (r >> 40) % 8),
                _ => a + (b - a) * ((r >> 11) as f64 / (1u64 << 53) as f64),
            };
            for x in [x, -x] {
                let c = f16_nearest(x).to_f64();
                let (lo, hi) = (a.copysign(x), b.copysign(x));
                let want = if x.abs() < mid {
                    lo
                } else if x.abs() > mid {
                    hi
                } else if bits.is_multiple_of(2) {
                    lo
                } else {
                    hi
                };
                assert_eq!(c, want, "{x:e}: {c} against {want}");
            }
        }
    }

    #[test]
    fn non_finite_metrics_are_null_and_a_finite_column_has_no_validity() {
        let col = finite_or_null(&[1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0]);
        let valid: Vec<bool> = (0..col.len()).map(|i| col.is_valid(i)).collect();
        assert_eq!(valid, [true, false, false, false, true]);
        assert_eq!(col.value(0), 1.0);
        assert!(col.value(4) == 0.0 && col.value(4).is_sign_negative());
        let col = finite_or_null(&[3.0, 4.0]);
        assert!(col.nulls().is_none());
        assert_eq!(col.values().as_ref(), [3.0, 4.0]);
        assert!(finite_or_null(&[]).is_empty());
    }

    #[test]
    fn encodes_every_column_kind() {
        let layout = RowLayout::new(Columns {
            arms: vec!["a".into(), "b".into()],
            covariates: vec![
                CovariateColumn {
                    name: "wt".into(),
                    labels: None,
                },
                CovariateColumn {
                    name: "sex".into(),
                    labels: Some(vec!["male".into(), "female".into()]),
                },
            ],
            parameters: vec!["cl".into()],
            metrics: vec!["cp_auc".into()],
            profile_outputs: vec!["cp".into()],
            n_times: 2,
            times: Vec::new(),
            profile_f16: true,
            observations: vec![],
        });
        let out = ChunkOutput {
            metrics: vec![vec![1.5, f64::NAN]],
            status: vec![0, 3],
            profiles: vec![vec![0.0, 1.0, 2.0, f64::NAN]],
            ..Default::default()
        };
        let subject = layout
            .subject_columns(
                vec![vec![70.0, 80.0], vec![1.0, 0.0]],
                vec![vec![5.0, 6.0]],
                2,
            )
            .unwrap();
        let b = layout
            .encode(1, 10, &subject, &out.view_all(), &[])
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(b.num_columns() - 1).name(), "cp_profile");
        let auc = b.column_by_name("cp_auc").unwrap();
        assert_eq!(auc.null_count(), 1);
        let ids = b
            .column_by_name("subject_id")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![10, 11]);
        let profile = b
            .column_by_name("cp_profile")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap()
            .values()
            .clone();
        let items = profile.as_any().downcast_ref::<Float16Array>().unwrap();
        let valid: Vec<bool> = (0..items.len()).map(|i| items.is_valid(i)).collect();
        assert_eq!(valid, [true, true, true, false]);
        assert_eq!(items.value(2), half::f16::from_f64(2.0));
    }

    /// Profile (and observation) items in f16: a finite value beyond f16's range would be
    /// written as infinite, neither the value nor the null of a value that is not finite; the
    /// batch is refused, with the column, subject, arm and sampling time. Values that round to
    /// f16's largest are written, non-finite ones are null as before.
    #[test]
    fn f16_items_beyond_its_range_are_refused() {
        let layout = RowLayout::new(Columns {
            arms: vec!["low".into(), "high".into()],
            profile_outputs: vec!["cp".into()],
            n_times: 3,
            times: vec![0.0, 12.0, 24.0],
            profile_f16: true,
            observations: vec!["cp".into()],
            ..Default::default()
        });
        let encode = |profile: Vec<f64>, obs: Vec<f64>| {
            let out = ChunkOutput {
                metrics: vec![],
                status: vec![0; profile.len() / 3],
                profiles: vec![profile],
                ..Default::default()
            };
            layout.encode(1, 40, &[], &out.view_all(), &[obs])
        };
        // At the edge: 65 519 rounds to 65 504; NaN and ±inf are null.
        let fine = vec![
            F16_MAX,
            -65519.0,
            f64::NAN,
            1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let b = encode(fine.clone(), fine.clone()).unwrap();
        for col in ["cp_profile", "cp_obs"] {
            let list = b.column_by_name(col).unwrap();
            let list = list.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
            let items = list.values();
            let items = items.as_any().downcast_ref::<Float16Array>().unwrap();
            let valid: Vec<bool> = (0..items.len()).map(|i| items.is_valid(i)).collect();
            assert_eq!(valid, [true, true, false, true, false, false], "{col}");
            assert_eq!(items.value(0).to_f64(), F16_MAX);
            assert_eq!(items.value(1).to_f64(), -F16_MAX);
        }
        // 65 520 rounds to infinity in f16: refused, where it is.
        let e = encode(vec![1.0, 2.0, 3.0, 4.0, 65520.0, 6.0], fine.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "cp_profile of subject 41 in arm 'high' is 6.552000e4 at t = 12 (sampling time 2 of \
                 3), beyond the largest value profiles in f16 hold (65504): f16"
            ) && e.contains("65504")
                && e.contains("precision = \"f32\""),
            "{e}"
        );
        let e = encode(fine, vec![-9.0e4, 0.0, 0.0, 0.0, 1e5, 7e4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "cp_obs of subject 40 in arm 'high' is -9.000000e4 at t = 0 (sampling time 1 of \
                 3), beyond the largest value profiles in f16 hold (65504) (one of 3 such values \
                 of this arm's rows in this part): f16"
            ),
            "{e}"
        );
    }

    /// Profile items in f32: non-finite values null; out of f32's range, infinite but valid
    /// (as converting the value gives); all finite, no validity.
    #[test]
    fn f32_profile_items_are_null_where_not_finite() {
        let layout = |n_times| {
            RowLayout::new(Columns {
                arms: vec!["a".into()],
                profile_outputs: vec!["cp".into()],
                n_times,
                ..Default::default()
            })
        };
        let items = |lay: &RowLayout, values: Vec<f64>| {
            let out = ChunkOutput {
                metrics: vec![],
                status: vec![0; values.len() / 2],
                profiles: vec![values],
                ..Default::default()
            };
            let b = lay.encode(0, 0, &[], &out.view_all(), &[]).unwrap();
            let col = b.column_by_name("cp_profile").unwrap().clone();
            let list = col.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
            list.values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .clone()
        };
        let lay = layout(2);
        let got = items(&lay, vec![1.5, f64::NAN, 1e300, f64::NEG_INFINITY]);
        let valid: Vec<bool> = (0..got.len()).map(|i| got.is_valid(i)).collect();
        assert_eq!(valid, [true, false, true, false]);
        assert_eq!((got.value(0), got.value(2)), (1.5, f32::INFINITY));
        let got = items(&lay, vec![1.0, 2.0]);
        assert!(got.nulls().is_none());
        assert_eq!(got.values().as_ref(), [1.0f32, 2.0]);
    }
}
