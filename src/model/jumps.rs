//! Jumps in time: where a step function (`floor`, `ceil`, a comparison, a logical operation)
//! of time and parameters alone changes its value. Unlike a jump with the states, such a jump
//! is known before the integration starts, so it becomes a stopping point of the integration:
//! the step before it evaluates the model at its left limit, the step after it starts on the
//! new side, and the step control never meets the jump (docs/model-language.md, "Jumps").
//!
//! The times are found from the lowered programs (the right-hand side and the outputs): each
//! step function's argument (for a comparison, the difference of its two sides) is affine in
//! `t` between the jumps of the step functions inside it (`t > 30`, `floor(t / 24)`,
//! `mod(t - 8, 24) < 12`, `t >= tstart` with `tstart` a parameter), so its crossings of a
//! bound or of whole numbers are solved for on each such piece, then located to the first
//! floating-point time at which the step function, evaluated as the backends evaluate it,
//! takes its new value. A step whose argument is not affine in `t` there (`sin(t) > 0`) is
//! not located; [`TimeJumps::not_affine`] names its statements.

use super::lower::{ModelPrograms, Op, Program, Reg};
use crate::backend::Precision;

/// The most jumps in time one integration span may hold: beyond it, the model's steps in
/// time are too fine to become stopping points (`floor(1000 * t)` over weeks).
pub const MAX_JUMPS: usize = 100_000;

/// What a step's argument crosses where the step changes value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    /// Whole numbers (`floor`, `ceil`).
    Integers,
    /// Zero (a comparison of the two sides, a truth value).
    Zero,
}

/// Which steps in time [`TimeJumps::jumps`] gives the jumps of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// Those of constants alone: the same for every subject.
    Constant,
    /// Those that move with the parameters: each subject's own.
    Moving,
}

/// A crossing function of a step: `a − b` (`a` alone without `b`) against `bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crossing {
    a: Reg,
    b: Option<Reg>,
    bound: Bound,
}

/// A step function of time and parameters alone.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// Its register in [`TimeJumps::prog`].
    reg: Reg,
    crossings: Vec<Crossing>,
    /// Whether its jumps move with the parameters.
    on_params: bool,
    /// The model statement it comes from.
    origin: Option<u32>,
}

/// The step functions of time (and parameters) of a model, and how to find their jumps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimeJumps {
    /// The steps and their crossing functions, from the right-hand side and the outputs.
    prog: Program,
    steps: Vec<Step>,
    /// Statements (indices into [`ModelPrograms::statements`]) holding a step in time whose
    /// argument is not affine in `t` between the jumps of the steps inside it: its jumps are
    /// not located (each once, in the order of the file).
    pub not_affine: Vec<u32>,
    /// Those steps themselves: their instructions in the right-hand side's program followed
    /// by the outputs' (`rhs.concat(outputs)`), which `events = "locate"` holds as switches
    /// (`super::switches`).
    pub not_affine_steps: Vec<Reg>,
}

fn same(x: f64, y: f64) -> bool {
    x == y || (x.is_nan() && y.is_nan())
}

/// How a value depends on `t`, the steps in time held at their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Degree {
    Constant,
    Affine,
    Other,
}

impl TimeJumps {
    /// The steps in time of a model's right-hand side and outputs.
    pub fn new(rhs: &Program, outputs: &Program) -> TimeJumps {
        use Op::*;
        let p = rhs.concat(outputs);
        let n = p.instrs.len();
        let (mut timed, mut stated, mut param) = (vec![false; n], vec![false; n], vec![false; n]);
        let mut time_step = vec![false; n];
        let mut degree = vec![Degree::Constant; n];
        for (i, op) in p.instrs.iter().enumerate() {
            let any = |v: &[bool]| op.args().any(|a| v[a as usize]);
            timed[i] = matches!(op, Time) || any(&timed);
            stated[i] = matches!(op, State(_) | Slot(_)) || any(&stated);
            param[i] = matches!(op, Param(_)) || any(&param);
            time_step[i] = op.is_step() && timed[i] && !stated[i];
            let d = |r: Reg| degree[r as usize];
            degree[i] = if !timed[i] || time_step[i] {
                Degree::Constant
            } else {
                match *op {
                    Time => Degree::Affine,
                    Neg(a) => d(a),
                    Add(a, b) | Sub(a, b) => d(a).max(d(b)),
                    Mul(a, b) if d(a) == Degree::Constant || d(b) == Degree::Constant => {
                        d(a).max(d(b))
                    }
                    Div(a, b) if d(b) == Degree::Constant => d(a),
                    Powi(a, 1) => d(a),
                    // Between the jumps of its condition, one of two values.
                    Select(c, a, b) if d(c) == Degree::Constant => d(a).max(d(b)),
                    _ => Degree::Other,
                }
            };
        }
        let mut kept: Vec<Reg> = Vec::new();
        let mut steps: Vec<(usize, Vec<Crossing>)> = Vec::new();
        let mut not_affine: Vec<u32> = Vec::new();
        let mut not_affine_steps: Vec<Reg> = Vec::new();
        for (i, op) in p.instrs.iter().enumerate() {
            if !time_step[i] {
                continue;
            }
            let crossings: Vec<Crossing> = match *op {
                Floor(a) | Ceil(a) => vec![Crossing {
                    a,
                    b: None,
                    bound: Bound::Integers,
                }],
                Lt(a, b) | Le(a, b) | Gt(a, b) | Ge(a, b) | Eq(a, b) | Ne(a, b) => vec![Crossing {
                    a,
                    b: Some(b),
                    bound: Bound::Zero,
                }],
                // A truth value of something that is not itself a step: where it crosses 0.
                Not(_) | And(..) | Or(..) => op
                    .args()
                    .filter(|&a| timed[a as usize] && !time_step[a as usize])
                    .map(|a| Crossing {
                        a,
                        b: None,
                        bound: Bound::Zero,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let regs = |c: &Crossing| std::iter::once(c.a).chain(c.b);
            if crossings
                .iter()
                .flat_map(regs)
                .any(|r| degree[r as usize] == Degree::Other)
            {
                if let Some(o) = p.origin(i) {
                    not_affine.push(o);
                }
                not_affine_steps.push(i as Reg);
                continue;
            }
            if crossings.is_empty() {
                continue;
            }
            kept.push(i as Reg);
            kept.extend(crossings.iter().flat_map(regs));
            steps.push((i, crossings));
        }
        not_affine.sort_unstable();
        not_affine.dedup();
        if steps.is_empty() {
            return TimeJumps {
                not_affine,
                not_affine_steps,
                ..TimeJumps::default()
            };
        }
        // The program of the steps and their crossing functions alone, renumbered.
        let prog = p.keep_registers(&kept);
        let map: std::collections::HashMap<Reg, Reg> = kept
            .iter()
            .zip(&prog.results)
            .map(|(&old, &new)| (old, new))
            .collect();
        let steps = steps
            .into_iter()
            .map(|(i, crossings)| Step {
                reg: map[&(i as Reg)],
                crossings: crossings
                    .into_iter()
                    .map(|c| Crossing {
                        a: map[&c.a],
                        b: c.b.map(|b| map[&b]),
                        bound: c.bound,
                    })
                    .collect(),
                on_params: param[i],
                origin: p.origin(i),
            })
            .collect();
        TimeJumps {
            prog,
            steps,
            not_affine,
            not_affine_steps,
        }
    }

    /// Whether the model has steps in time that are located.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether some of its steps in time move with the parameters: each subject has jumps of
    /// its own (the GPU arm kernels are built to read them, `OWN_STOPS`).
    pub fn moves_with_params(&self) -> bool {
        self.steps.iter().any(|s| s.on_params)
    }

    /// Statements whose steps in time move with the parameters (each once, in the order of
    /// the file).
    pub fn on_params(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .steps
            .iter()
            .filter(|s| s.on_params)
            .filter_map(|s| s.origin)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The jumps in (lo, hi) with the parameters `params`, sorted: for each, the first time
    /// at which a step takes its new value (evaluated in f64 as the model is everywhere), of
    /// the steps `which` picks. An error where there are more than [`MAX_JUMPS`].
    pub fn jumps(
        &self,
        params: &[f64],
        lo: f64,
        hi: f64,
        which: Which,
    ) -> Result<Vec<f64>, String> {
        let mut found: Vec<f64> = Vec::new();
        // The jumps of steps that move with the parameters.
        let mut moving: Vec<f64> = Vec::new();
        if self.steps.is_empty() || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            return Ok(found);
        }
        let mut regs = Vec::new();
        let mut eval =
            |t: f64, regs: &mut Vec<f64>| self.prog.run(t, &[], params, &[], regs, &mut []);
        for step in &self.steps {
            // A step of constants alone has none that moves inside it.
            if which == Which::Constant && step.on_params {
                continue;
            }
            // The pieces between the jumps found so far (those of the steps inside this one
            // among them): the crossing functions are affine on each.
            let mut bounds: Vec<f64> = Vec::with_capacity(found.len() + 2);
            bounds.push(lo);
            bounds.extend(found.iter().copied());
            bounds.push(hi);
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let mut new: Vec<f64> = Vec::new();
            let value = |regs: &[f64], c: &Crossing| {
                regs[c.a as usize] - c.b.map_or(0.0, |b| regs[b as usize])
            };
            for c in &step.crossings {
                for (i, w) in bounds.windows(2).enumerate() {
                    let (p0, p1) = (w[0], w[1]);
                    let pm = p0 + 0.5 * (p1 - p0);
                    if !(pm > p0 && pm < p1) {
                        continue;
                    }
                    eval(p0, &mut regs);
                    let g0 = value(&regs, c);
                    eval(pm, &mut regs);
                    let gm = value(&regs, c);
                    let slope = (gm - g0) / (pm - p0);
                    if !g0.is_finite() || !slope.is_finite() || slope == 0.0 {
                        continue;
                    }
                    // On its bound right at the jump of another step (`t >= tind` where
                    // `mod(t, 24) >= 12` jumps, tind = 60): the jump is at that time or just
                    // after it, searched for from the piece before. That other jump's stop
                    // covers it; found here, a subject's own jumps list it too. On its bound
                    // at `lo` (`t > tind` with tind = 0): the jump just after it, if any.
                    let on_bound = match c.bound {
                        Bound::Zero => g0 == 0.0,
                        Bound::Integers => g0 == g0.round(),
                    };
                    if on_bound {
                        // Such a jump is within a few ulps of p0: a search that reaches no
                        // further costs two evaluations where there is none.
                        let from = bounds[i.saturating_sub(1)];
                        let reach = (1e-12 * p0.abs().max(1.0)).min(p1 - p0);
                        if let Some(t) =
                            self.locate(step.reg, p0, from, p1, reach, &mut eval, &mut regs)
                        {
                            new.push(t);
                        }
                    }
                    let g1 = g0 + slope * (p1 - p0);
                    let (gl, gh) = (g0.min(g1), g0.max(g1));
                    let targets: Box<dyn Iterator<Item = f64>> = match c.bound {
                        Bound::Zero => Box::new((gl < 0.0 && 0.0 < gh).then_some(0.0).into_iter()),
                        Bound::Integers => {
                            let (k0, k1) = (gl.floor() + 1.0, gh.ceil() - 1.0);
                            if k1 - k0 + 1.0 > (MAX_JUMPS - found.len().min(MAX_JUMPS)) as f64 {
                                return Err(too_many(lo, hi));
                            }
                            Box::new(
                                (0..(k1 - k0 + 1.0).max(0.0) as u64).map(move |j| k0 + j as f64),
                            )
                        }
                    };
                    // Neighbouring whole numbers are 1 / |slope| apart: a bracket stays within
                    // a quarter of that.
                    let reach = 0.25 / slope.abs();
                    for v in targets {
                        let guess = p0 + (v - g0) / slope;
                        if let Some(t) =
                            self.locate(step.reg, guess, p0, p1, reach, &mut eval, &mut regs)
                        {
                            new.push(t);
                        }
                    }
                }
            }
            if step.on_params {
                moving.extend_from_slice(&new);
            }
            found.extend(new);
            found.sort_by(f64::total_cmp);
            found.dedup();
            if found.len() > MAX_JUMPS {
                return Err(too_many(lo, hi));
            }
        }
        if which == Which::Moving {
            moving.sort_by(f64::total_cmp);
            moving.dedup();
            return Ok(moving);
        }
        Ok(found)
    }

    /// The first time in (p0, p1) at which step `reg` takes a new value near `guess`, found by
    /// bisection on its evaluated value; `None` where it does not change there (a crossing
    /// that touches its bound for one floating-point time only, `t == 30`, is no jump).
    #[allow(clippy::too_many_arguments)]
    fn locate(
        &self,
        reg: Reg,
        guess: f64,
        p0: f64,
        p1: f64,
        reach: f64,
        eval: &mut impl FnMut(f64, &mut Vec<f64>),
        regs: &mut Vec<f64>,
    ) -> Option<f64> {
        let mut s = |t: f64| {
            eval(t, regs);
            regs[reg as usize]
        };
        let top = p1.next_down();
        let guess = guess.clamp(p0, top);
        let mut delta = (1e-12 * guess.abs().max(1.0)).min(reach);
        let (mut a, mut b);
        let (mut sa, mut sb);
        loop {
            a = (guess - delta).max(p0);
            b = (guess + delta).min(top);
            sa = s(a);
            sb = s(b);
            if !same(sa, sb) {
                break;
            }
            if delta >= reach || (a <= p0 && b >= top) {
                return None;
            }
            delta = (4.0 * delta).min(reach);
        }
        // s(a) is the old value, s(b) the new one: close in on the first time of the new.
        while a.next_up() < b {
            let m = a + 0.5 * (b - a);
            if m <= a || m >= b {
                break;
            }
            if same(s(m), sa) {
                a = m;
            } else {
                b = m;
            }
        }
        let new = s(b);
        let after = b.next_up();
        if b <= p0 || (after < p1 && !same(s(after), new)) {
            return None;
        }
        Some(b)
    }
}

fn too_many(lo: f64, hi: f64) -> String {
    format!(
        "the model's steps in time jump more than {MAX_JUMPS} times between {lo} and {hi}: too \
         many to stop at each"
    )
}

/// Whether jumps in time become stopping points: yes, unless the environment variable
/// `VPOP_JUMP_STOPS` is `0` (to measure what they change; docs/model-language.md, "Jumps").
pub fn jump_stops_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("VPOP_JUMP_STOPS").map_or(true, |v| v.trim() != "0"))
}

/// Where the integration stops for a jump at `t` (the first time of the new value), in the
/// precision `precision` it runs in: two units in the last place after it, rounded up to
/// that precision. The step that ends there evaluates the model four or more units in the
/// last place before its end (`left_limit`), on the old side; the step after it starts on the
/// new side, even where a backend's evaluation of the step lands a unit or two off.
pub fn stop_after(t: f64, precision: Precision) -> f64 {
    match precision {
        Precision::F64 => t.next_up().next_up(),
        Precision::F32 => {
            let mut x = t as f32;
            if f64::from(x) < t {
                x = x.next_up();
            }
            f64::from(x.next_up().next_up())
        }
    }
}

impl ModelPrograms {
    /// Where the model jumps in time between `lo` and `hi` with the parameters `params`, as
    /// stopping points in `precision` ([`TimeJumps::jumps`], [`stop_after`]): sorted, unique,
    /// inside (lo, hi). `others` (sorted) are stopping points the integration makes anyway
    /// (as `lo` and `hi`): a jump with one of them at or after its first time of the new value
    /// and at or before its own stop needs none of its own (a window edge or a dose at 24 h,
    /// where `floor(t / 24)` jumps: the step that ends there evaluates the model before it,
    /// and the next one starts on the new side). Such a stop would only add a segment two
    /// units in the last place long, and a step for it: examples/induction.toml's f32 kernel
    /// took 6 % longer on lavapipe with them.
    pub fn jump_stops(
        &self,
        params: &[f64],
        lo: f64,
        hi: f64,
        which: Which,
        precision: Precision,
        others: &[f64],
    ) -> Result<Vec<f64>, String> {
        if !jump_stops_on() {
            return Ok(Vec::new());
        }
        let jumps = self.time_jumps.jumps(params, lo, hi, which)?;
        Ok(stops_of(&jumps, lo, hi, precision, others))
    }

    /// The stopping points of a dataset subject's records between `lo` and `hi` for the jumps
    /// in time with the parameters `params` ([`ModelPrograms::jump_stops`]), in each of
    /// `precisions`: f64 alone on the CPU reference; f64 and f32 in a record program, since
    /// one program runs in both: each jump's f64 stop, and its f32 stop (rounded up to f32,
    /// two f32 units after). An f32 kernel rounds the f64 stop to the nearest f32, which can be
    /// before the jump; the segment from there to the f32 stop, a few f32 units long, is
    /// evaluated at its start ([`crate::solver::left_limit`]), and the jump counts from the
    /// f32 stop. In f64, the segment from the f64 stop to the f32 one is on the new side
    /// throughout.
    pub fn record_jump_stops(
        &self,
        params: &[f64],
        lo: f64,
        hi: f64,
        precisions: &[Precision],
    ) -> Result<Vec<f64>, String> {
        if !jump_stops_on() {
            return Ok(Vec::new());
        }
        let jumps = self.time_jumps.jumps(params, lo, hi, Which::All)?;
        let mut v = Vec::new();
        for &p in precisions {
            v.extend(stops_of(&jumps, lo, hi, p, &[]));
        }
        v.sort_by(f64::total_cmp);
        v.dedup();
        Ok(v)
    }
}

impl ModelPrograms {
    /// The stopping points of the jumps in time, with the parameters `params`, inside an
    /// interval of local time (0, `len`) that stands for the model's times from `shift` on:
    /// the local time τ is the model's `τ + shift` as the sum rounds (a steady state's
    /// iterations over the interval before a dose: the CPU reference's
    /// `WithQuadrature::t_shift`, the kernels' `t + q[T_SLOT]`). For each jump of the steps
    /// `which` picks and each precision of `precisions`, the first local time at which the
    /// model's time, summed in that precision, is at or after the jump's stop there
    /// ([`stop_after`]); the step that ends there evaluates the model at its left limit on
    /// the model time's scale (`crate::solver::left_limit_shifted`), before the jump. Sorted,
    /// unique, as f64 values (of f32 numbers for f32).
    pub fn shifted_jump_stops(
        &self,
        params: &[f64],
        shift: f64,
        len: f64,
        which: Which,
        precisions: &[Precision],
    ) -> Result<Vec<f64>, String> {
        if !jump_stops_on() || self.time_jumps.is_empty() {
            return Ok(Vec::new());
        }
        let jumps = self.time_jumps.jumps(params, shift, shift + len, which)?;
        /// The first τ with τ + shift ≥ stop in the arithmetic of `T`, if inside (0, len).
        fn first_local<T>(stop: T, shift: T, len: T, up: fn(T) -> T, down: fn(T) -> T) -> Option<T>
        where
            T: Copy + PartialOrd + Default + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
        {
            let mut tau = stop - shift;
            while tau + shift < stop {
                tau = up(tau);
            }
            while down(tau) + shift >= stop {
                tau = down(tau);
            }
            (tau > T::default() && tau < len).then_some(tau)
        }
        let mut v = Vec::new();
        for &j in &jumps {
            for &p in precisions {
                let stop = stop_after(j, p);
                v.extend(match p {
                    Precision::F64 => first_local(stop, shift, len, f64::next_up, f64::next_down),
                    Precision::F32 => first_local(
                        stop as f32,
                        shift as f32,
                        len as f32,
                        f32::next_up,
                        f32::next_down,
                    )
                    .map(f64::from),
                });
            }
        }
        v.sort_by(f64::total_cmp);
        v.dedup();
        Ok(v)
    }
}

/// The stops of `jumps` (sorted) in `precision` inside (lo, hi), those covered by `others` or
/// `hi` left out ([`ModelPrograms::jump_stops`]). A jump at or before the stop of the one
/// before it (`t >= 60` and `t > 60`, an ulp apart) is covered by that stop too.
fn stops_of(jumps: &[f64], lo: f64, hi: f64, precision: Precision, others: &[f64]) -> Vec<f64> {
    let held = |x: f64| match precision {
        Precision::F64 => x,
        Precision::F32 => f64::from(x as f32),
    };
    let covered = |flip: f64, stop: f64| {
        let from = others.partition_point(|&s| held(s) < flip);
        others.get(from).is_some_and(|&s| held(s) <= stop) || (flip..=stop).contains(&held(hi))
    };
    let mut v: Vec<f64> = Vec::new();
    for &t in jumps {
        let stop = stop_after(t, precision);
        let after_last = v.last().is_none_or(|&last| held(last) < t);
        if stop > lo && stop < hi && after_last && !covered(t, stop) {
            v.push(stop);
        }
    }
    v
}

impl ModelPrograms {
    /// A subject's stopping points for the jumps in time `which` picks, in `precision`, over
    /// [0, `end`]: with its parameters `params`, then from the start of each later occasion
    /// (`occasions`, sorted) the parameters of that occasion (`later`).
    #[allow(clippy::too_many_arguments)]
    pub fn subject_jump_stops(
        &self,
        params: &[f64],
        later: &[Vec<f64>],
        occasions: &[f64],
        end: f64,
        which: Which,
        precision: Precision,
        others: &[f64],
    ) -> Result<Vec<f64>, String> {
        if self.time_jumps.is_empty() {
            return Ok(Vec::new());
        }
        let mut stops = Vec::new();
        let mut lo = 0.0;
        let sets = std::iter::once(params).chain(later.iter().map(Vec::as_slice));
        let ends = occasions.iter().copied().chain(std::iter::once(end));
        for (p, hi) in sets.zip(ends) {
            let hi = hi.min(end);
            if hi > lo {
                stops.extend(self.jump_stops(p, lo, hi, which, precision, others)?);
            }
            lo = lo.max(hi);
        }
        stops.sort_by(f64::total_cmp);
        stops.dedup();
        Ok(stops)
    }

    /// `vpop check`'s account of the model's steps in time over (0, `end`), with the
    /// parameters `params` (the model's values): how many jumps every subject shares and
    /// where the first of them are, and which statements jump where each subject's parameters
    /// say, with where they jump with `params`. `None` for a model without located steps in
    /// time.
    pub fn jump_summary(&self, params: &[f64], end: f64) -> Option<String> {
        if self.time_jumps.is_empty() {
            return None;
        }
        let found = |which| self.time_jumps.jumps(params, 0.0, end, which);
        let mut parts = Vec::new();
        match found(Which::Constant) {
            Ok(v) if !v.is_empty() => {
                let (n, times) = shown_times(&v);
                parts.push(format!("{n} shared by every subject, at t = {times}"))
            }
            Ok(_) => {}
            Err(e) => parts.push(e),
        }
        let moving: Vec<&super::lower::Statement> = self
            .time_jumps
            .on_params()
            .iter()
            .filter_map(|&o| self.statements.get(o as usize))
            .collect();
        if let Some(at) = super::lower::located(&moving) {
            parts.push(match found(Which::Moving) {
                Ok(v) if v.is_empty() => format!(
                    "each subject's own from its parameters ({at}; none before {} with the \
                     model's values)",
                    short_time(end)
                ),
                Ok(v) => format!(
                    "each subject's own from its parameters ({at}; at t = {} with the model's \
                     values)",
                    shown_times(&v).1
                ),
                Err(e) => e,
            });
        }
        if parts.is_empty() {
            parts.push(format!("none before t = {}", short_time(end)));
        }
        Some(format!(
            "in time, stopping points of the integration: {}",
            parts.join("; ")
        ))
    }

    /// `vpop simulate`'s account of one subject's jumps in time over (0, `end`) with its
    /// parameters `params`: how many, and the first of them. `None` for a model without
    /// located steps in time.
    pub fn subject_jump_summary(&self, params: &[f64], end: f64) -> Option<String> {
        if self.time_jumps.is_empty() {
            return None;
        }
        Some(match self.time_jumps.jumps(params, 0.0, end, Which::All) {
            Ok(v) if v.is_empty() => format!("none before t = {}", short_time(end)),
            Ok(v) => {
                let (n, times) = shown_times(&v);
                format!("{n}, at t = {times}")
            }
            Err(e) => e,
        })
    }

    /// The notes on the model, with the parameters `params`: its constants that fold to a
    /// value that is not finite ([`ModelPrograms::non_finite_constant_note`]), where its
    /// right-hand side jumps with the states ([`ModelPrograms::rhs_jump_note`]), and its steps
    /// in time that are not located, so not stopping points (docs/model-language.md, "Jumps").
    /// With `events` = locate, the right-hand side's jumps with the states and the steps in
    /// time off a straight line are located, and get no note.
    pub fn notes(&self, params: &[f64], events: crate::solver::Events) -> Vec<String> {
        let mut notes: Vec<String> = self.non_finite_constant_note().into_iter().collect();
        if events == crate::solver::Events::Cross {
            notes.extend(self.rhs_jump_note(params));
        }
        let not_affine: Vec<&super::lower::Statement> = self
            .time_jumps
            .not_affine
            .iter()
            .filter_map(|&o| self.statements.get(o as usize))
            .collect();
        let located = events == crate::solver::Events::Locate;
        if let Some(at) = super::lower::located(&not_affine).filter(|_| !located) {
            notes.push(format!(
                "a step in time whose argument is not a straight line in t ({at}) is crossed by \
                 the step control, not stopped at: its jumps are not located, and errors there \
                 can be above rtol; a threshold on t itself (t > 30, mod(t, 24) < 12) is a \
                 stopping point, and events = \"locate\" (every backend) locates \
                 its jumps (docs/model-language.md, \"Jumps\")"
            ));
        }
        notes
    }
}

/// Jump times for people: how many, and the first eight and the last, those an ulp apart
/// (`t >= 60` and `t > 60`) as one.
fn shown_times(v: &[f64]) -> (usize, String) {
    const SHOWN: usize = 8;
    let mut s: Vec<String> = v.iter().map(|&t| short_time(t)).collect();
    s.dedup();
    let n = s.len();
    if s.len() > SHOWN {
        let last = s.pop().unwrap_or_default();
        s.truncate(SHOWN);
        s.push(format!("… {last}"));
    }
    (n, s.join(", "))
}

/// A jump's time for people: to a millionth (`t > 30` jumps an ulp after 30, shown as 30),
/// or in scientific notation where that would hide it.
fn short_time(t: f64) -> String {
    if t != 0.0 && !(1e-3..1e9).contains(&t.abs()) {
        return format!("{t:.4e}");
    }
    let s = format!("{t:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    fn model(body: &str) -> ModelPrograms {
        let src = format!("state a\n{body}\noutput c = a\n");
        let m = Model::parse("m.vpm", &src).unwrap_or_else(|e| panic!("{e:?}\n{src}"));
        ModelPrograms::new(&m)
    }

    fn jumps(body: &str, params: &[f64], hi: f64) -> Vec<f64> {
        model(body)
            .time_jumps
            .jumps(params, 0.0, hi, Which::All)
            .unwrap()
    }

    #[test]
    fn a_threshold_in_time_jumps_at_the_first_time_of_its_new_value() {
        // `t > 30` is false at 30 and true just after it; `t >= 30` is true at 30.
        assert_eq!(
            jumps("d/dt(a) = if(t > 30, 1, 0)", &[], 100.0),
            vec![30f64.next_up()]
        );
        assert_eq!(jumps("d/dt(a) = if(t >= 30, 1, 0)", &[], 100.0), vec![30.0]);
        assert_eq!(jumps("d/dt(a) = if(t < 30, 1, 0)", &[], 100.0), vec![30.0]);
        assert_eq!(
            jumps("d/dt(a) = if(30 < t, 1, 0)", &[], 100.0),
            vec![30f64.next_up()]
        );
        // Beyond the span: none.
        assert!(jumps("d/dt(a) = if(t > 300, 1, 0)", &[], 100.0).is_empty());
        // A point (measure zero) is no jump.
        assert!(jumps("d/dt(a) = if(t == 30, 1, 0)", &[], 100.0).is_empty());
    }

    #[test]
    fn whole_numbers_of_an_affine_argument_and_steps_inside_steps() {
        assert_eq!(
            jumps("d/dt(a) = floor(t / 24)", &[], 100.0),
            vec![24.0, 48.0, 72.0, 96.0]
        );
        // ceil(t / 24) takes its new value just after each multiple (0 too: where t / 24
        // no longer rounds to 0).
        let c = jumps("d/dt(a) = ceil(t / 24)", &[], 100.0);
        assert_eq!(
            c,
            vec![
                first_of_ceil_24(),
                24f64.next_up(),
                48f64.next_up(),
                72f64.next_up(),
                96f64.next_up()
            ]
        );
        // A light on from 08:00 to 20:00 every day: mod(t - 8, 24) < 12.
        let light = jumps("d/dt(a) = if(mod(t - 8, 24) < 12, 1, 0)", &[], 60.0);
        // The floor inside jumps at 8 and 32 and 56 (its changes are stops too), the
        // comparison at 20 and 44.
        for want in [8.0, 20.0, 32.0, 44.0, 56.0] {
            assert!(
                light
                    .iter()
                    .any(|&t| (t - want).abs() <= 4.0 * f64::EPSILON * want),
                "{want} in {light:?}"
            );
        }
        assert_eq!(light.len(), 5, "{light:?}");
        // An interval: two comparisons.
        let on = jumps("d/dt(a) = if(t >= 10 && t < 20.5, 1, 0)", &[], 100.0);
        assert_eq!(on, vec![10.0, 20.5]);
    }

    #[test]
    fn a_jump_just_after_the_start_is_found() {
        // `t > tind` with tind = 0 jumps at the first time after 0; `t >= tind` at 0 itself,
        // which is no jump inside the span; `ceil(t / 24)` jumps just after 0 and after 24.
        let m = model("param tind = 0\nd/dt(a) = if(t > tind, 1, 0) + if(t >= tind, 1, 0)");
        assert_eq!(
            m.time_jumps.jumps(&[0.0], 0.0, 100.0, Which::All).unwrap(),
            vec![f64::from_bits(1)]
        );
        assert_eq!(
            m.time_jumps
                .jumps(&[12.0], 12.0, 100.0, Which::All)
                .unwrap(),
            vec![12f64.next_up()]
        );
        assert_eq!(
            jumps("d/dt(a) = ceil(t / 24)", &[], 30.0),
            vec![first_of_ceil_24(), 24f64.next_up()]
        );
    }

    /// The first time after 0 at which ceil(t / 24) is 1: t / 24 rounds to 0 for the first
    /// few subnormals.
    fn first_of_ceil_24() -> f64 {
        (1..64u64)
            .map(f64::from_bits)
            .find(|t| (t / 24.0).ceil() == 1.0)
            .unwrap()
    }

    #[test]
    fn a_moving_jump_right_at_a_shared_one_is_still_its_own() {
        // Light from 12:00 to 24:00 each day, induction from tind: with tind = 60, at the light's
        // jump.
        let m = model(
            "param tind = 60\nd/dt(a) = if(mod(t, 24) >= 12, 1, 0) + if(t >= tind, 1, 0) \
             + if(t > tind, 1, 0)",
        );
        let tj = &m.time_jumps;
        for tind in [60.0, 84.0, 61.5] {
            assert_eq!(
                tj.jumps(&[tind], 0.0, 100.0, Which::Moving).unwrap(),
                vec![tind, f64::next_up(tind)],
                "tind {tind}"
            );
        }
        assert_eq!(
            tj.jumps(&[60.0], 0.0, 100.0, Which::All).unwrap(),
            vec![
                12.0,
                24.0,
                36.0,
                48.0,
                60.0,
                60f64.next_up(),
                72.0,
                84.0,
                96.0
            ]
        );
        assert_eq!(
            tj.jumps(&[60.0], 0.0, 100.0, Which::Constant).unwrap(),
            vec![12.0, 24.0, 36.0, 48.0, 60.0, 72.0, 84.0, 96.0]
        );
        // A record program runs in either precision: it stops for both.
        let mut both: Vec<f64> = [36.0, 40.0, 48.0]
            .into_iter()
            .flat_map(|t| [stop_after(t, Precision::F64), stop_after(t, Precision::F32)])
            .collect();
        both.sort_by(f64::total_cmp);
        assert_eq!(
            m.record_jump_stops(&[40.0], 30.0, 50.0, &[Precision::F64, Precision::F32])
                .unwrap(),
            both
        );
        // One stop for the two: the first one's covers the second.
        for p in [Precision::F64, Precision::F32] {
            let stops = m
                .jump_stops(&[60.0], 50.0, 70.0, Which::All, p, &[])
                .unwrap();
            assert_eq!(stops, vec![stop_after(60.0, p)], "{p:?}");
        }
        // `vpop simulate`'s line: the subject's own, all together.
        assert_eq!(
            m.subject_jump_summary(&[60.0], 100.0).unwrap(),
            "8, at t = 12, 24, 36, 48, 60, 72, 84, 96"
        );
        assert_eq!(
            m.subject_jump_summary(&[60.0], 10.0).unwrap(),
            "none before t = 10"
        );
        // `vpop check`'s line says where.
        assert_eq!(
            m.jump_summary(&[60.0], 100.0).unwrap(),
            "in time, stopping points of the integration: 8 shared by every subject, at t = 12, \
             24, 36, 48, 60, 72, 84, 96; each subject's own from its parameters (`d/dt(a)` at m.vpm:3:6; at t = \
             60 with the model's values)"
        );
    }

    #[test]
    fn jumps_that_move_with_the_parameters() {
        let m = model("param tstart = 12\nparam k = 1\nd/dt(a) = if(t > tstart, k, 0)");
        let tj = &m.time_jumps;
        assert_eq!(tj.on_params().len(), 1);
        assert_eq!(
            tj.jumps(&[12.0, 1.0], 0.0, 100.0, Which::All).unwrap(),
            vec![12f64.next_up()]
        );
        assert_eq!(
            tj.jumps(&[40.5, 1.0], 0.0, 100.0, Which::Moving).unwrap(),
            vec![40.5f64.next_up()]
        );
        assert!(tj
            .jumps(&[40.5, 1.0], 0.0, 100.0, Which::Constant)
            .unwrap()
            .is_empty());
        // Every stop is strictly after the jump and inside the span.
        let stops = m
            .jump_stops(&[40.5, 1.0], 0.0, 100.0, Which::All, Precision::F64, &[])
            .unwrap();
        assert_eq!(stops, vec![40.5f64.next_up().next_up().next_up()]);
        let stops = m
            .jump_stops(&[40.5, 1.0], 0.0, 100.0, Which::All, Precision::F32, &[])
            .unwrap();
        assert_eq!(
            stops,
            vec![f64::from(40.5f32.next_up().next_up().next_up())]
        );
    }

    #[test]
    fn a_stop_at_a_jump_needs_none_of_its_own() {
        let m = model("d/dt(a) = floor(t / 24) + if(t > 30, 1, 0)");
        let all = |others: &[f64]| {
            m.jump_stops(&[], 0.0, 100.0, Which::All, Precision::F64, others)
                .unwrap()
        };
        let after = |t: f64| stop_after(t, Precision::F64);
        assert_eq!(
            all(&[]),
            vec![
                after(24.0),
                after(30f64.next_up()),
                after(48.0),
                after(72.0),
                after(96.0)
            ]
        );
        // A window edge at 24 and a dose at 48 + 1 ulp: those jumps are theirs. A dose at 30
        // comes before `t > 30` takes its new value: that jump keeps its stop.
        assert_eq!(
            all(&[24.0, 30.0, 48f64.next_up()]),
            vec![after(30f64.next_up()), after(72.0), after(96.0)]
        );
        // The end at 72: no stop of its own either.
        let to72 = m
            .jump_stops(&[], 0.0, 72.0, Which::All, Precision::F64, &[])
            .unwrap();
        assert_eq!(to72, vec![after(24.0), after(30f64.next_up()), after(48.0)]);
        // In f32, against the times as f32 holds them.
        let f32s = m
            .jump_stops(&[], 0.0, 100.0, Which::All, Precision::F32, &[24.0, 48.0])
            .unwrap();
        assert_eq!(f32s.len(), 3, "{f32s:?}");
    }

    #[test]
    fn a_subject_s_jumps_follow_its_occasions() {
        let m = model("param tstart = 12\nd/dt(a) = if(t > tstart, 1, 0) + floor(t / 24)");
        let stops = m
            .subject_jump_stops(
                &[12.0],
                &[vec![50.0]],
                &[40.0],
                100.0,
                Which::Moving,
                Precision::F64,
                &[],
            )
            .unwrap();
        // 12 in the first occasion, 50 in the second; the days are not the subject's own.
        assert_eq!(
            stops,
            vec![
                stop_after(12f64.next_up(), Precision::F64),
                stop_after(50f64.next_up(), Precision::F64)
            ]
        );
        // A jump time of the first occasion's parameters past its end is not one.
        let stops = m
            .subject_jump_stops(
                &[45.0],
                &[vec![20.0]],
                &[40.0],
                100.0,
                Which::Moving,
                Precision::F64,
                &[],
            )
            .unwrap();
        assert!(stops.is_empty(), "{stops:?}");
    }

    #[test]
    fn steps_of_the_states_or_not_affine_in_time_are_not_located() {
        let m = model("d/dt(a) = if(a > 2, 1, 0) + if(sin(t) > 0, 1, 0)");
        assert!(m.time_jumps.is_empty());
        assert_eq!(m.time_jumps.not_affine.len(), 1);
        // A Hill switch in time is smooth: nothing to locate or to note.
        let m = model("d/dt(a) = t^4 / (10^4 + t^4)");
        assert!(m.time_jumps.is_empty() && m.time_jumps.not_affine.is_empty());
        // Every library model: no steps in time.
        for lib in crate::model::library::MODELS {
            let m = Model::parse(lib.name, lib.source).unwrap();
            let p = ModelPrograms::new(&m);
            assert!(p.time_jumps.is_empty(), "{}", lib.name);
        }
    }

    #[test]
    fn too_many_jumps_are_an_error() {
        let m = model("d/dt(a) = floor(1000 * t)");
        let e = m
            .time_jumps
            .jumps(&[], 0.0, 1000.0, Which::All)
            .unwrap_err();
        assert!(e.contains("100000"), "{e}");
    }
}
