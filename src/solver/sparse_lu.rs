//! LU factorisation of a Rosenbrock method's W = si·I − sj·J along the structure of J.
//!
//! A large model's Jacobian is mostly structural zeros (a transit chain is banded, a signalling
//! cascade a chain with a few feedbacks, a QSP network a sparse graph), and which entries can
//! be nonzero is known from the model's symbolic derivatives before any subject runs. A
//! [`LuPlan`] is made once from that pattern: an elimination order (minimum degree on the
//! symmetrised pattern, pivots kept on the diagonal, a component whose pivot would be W's
//! identity part alone taken after the others), the fill-in that order causes, and the
//! list of operations of the numeric factorisation, which then touches structural entries only.
//!
//! Pivots stay on the diagonal (no row exchanges, so the structure is fixed); each is checked
//! against its column: |pivot| ≥ [`PIVOT_THRESHOLD`]·max|entries below it|, the test of
//! threshold partial pivoting. For the matrices Rosenbrock methods factorise in PK/PD and QSP
//! models (I/(hγ) minus the Jacobian of mass-balance kinetics: column diagonally dominant) it
//! holds; where it does not, [`LuPlan::factor`] says so and the caller factorises densely with
//! partial pivoting instead. The GPU kernels generate the same operations as straight-line code
//! (`src/backend/wsparse.rs`).

/// Systems of fewer components are factorised densely (the integrator's constant-size copies
/// cover them, and every library model is one).
pub const MIN_DIM: usize = 9;

/// A pivot smaller than this fraction of the largest entry below it in its column is refused
/// (the growth of the entries per elimination step is then at most 1 + 1/0.1 = 11).
pub const PIVOT_THRESHOLD: f64 = 0.1;

/// One entry of a pivot's column below the diagonal and the updates it makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerEntry {
    /// Its place in the factors' values.
    pub slot: u32,
    /// The updates it multiplies: `upd[from..to]`.
    pub upd: [u32; 2],
}

/// The structure of the factors of W for one Jacobian pattern, and the operations that factorise
/// and solve with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LuPlan {
    n: usize,
    /// The pattern the plan was made for (n×n, row-major).
    pattern: Vec<bool>,
    /// `order[k]`: the component (row and column) eliminated k-th.
    order: Vec<u32>,
    /// Per structural entry of W (the pattern and the whole diagonal): its row-major index in
    /// the n×n matrix, its slot, and whether it is on the diagonal.
    entries: Vec<(u32, u32, bool)>,
    /// Per entry: its index among the pattern's entries in row-major order (the values of
    /// [`LuPlan::assemble_values`]), or `u32::MAX` for a diagonal entry outside the pattern.
    value_of: Vec<u32>,
    /// Slot of the k-th pivot.
    diag: Vec<u32>,
    /// Column k's entries below its pivot: `lower[col[k]..col[k + 1]]`.
    col: Vec<u32>,
    lower: Vec<LowerEntry>,
    /// Updates `[target slot, source slot]`: value[target] −= multiplier·value[source].
    upd: Vec<[u32; 2]>,
    /// Row k of L (unit diagonal not stored) and of U (diagonal apart), in elimination
    /// positions: `[column position, slot]`, columns ascending.
    lrow: Vec<u32>,
    lents: Vec<[u32; 2]>,
    urow: Vec<u32>,
    uents: Vec<[u32; 2]>,
    nnz: usize,
}

type Bits = Vec<u64>;

fn bit(b: &[u64], i: usize) -> bool {
    b[i / 64] >> (i % 64) & 1 == 1
}

fn set(b: &mut [u64], i: usize) {
    b[i / 64] |= 1 << (i % 64);
}

fn ones(b: &[u64]) -> impl Iterator<Item = usize> + '_ {
    b.iter().enumerate().flat_map(|(w, &x)| {
        let mut x = x;
        std::iter::from_fn(move || {
            (x != 0).then(|| {
                let i = x.trailing_zeros() as usize;
                x &= x - 1;
                w * 64 + i
            })
        })
    })
}

impl LuPlan {
    /// The plan for W of an n×n Jacobian whose entries are zero wherever `pattern` is false
    /// (row-major; the diagonal is always part of W).
    pub fn new(n: usize, pattern: &[bool]) -> LuPlan {
        assert_eq!(pattern.len(), n * n, "pattern of an {n}×{n} matrix");
        let words = n.div_ceil(64).max(1);
        let order = min_degree_order(n, pattern, words);
        let mut pos = vec![0usize; n];
        for (k, &c) in order.iter().enumerate() {
            pos[c as usize] = k;
        }
        // Rows in elimination positions, then their fill-in: row i takes row k's part right
        // of the pivot wherever it has an entry in column k.
        let mut rows: Vec<Bits> = vec![vec![0; words]; n];
        for i in 0..n {
            set(&mut rows[pos[i]], pos[i]);
            for j in 0..n {
                if pattern[i * n + j] {
                    set(&mut rows[pos[i]], pos[j]);
                }
            }
        }
        for k in 0..n {
            let mut right = rows[k].clone();
            for (w, x) in right.iter_mut().enumerate() {
                // Keep the bits above k.
                let lo = w * 64;
                if lo + 64 <= k + 1 {
                    *x = 0;
                } else if lo <= k {
                    *x &= !0u64 << (k + 1 - lo);
                }
            }
            for row in rows.iter_mut().skip(k + 1) {
                if bit(row, k) {
                    for (a, b) in row.iter_mut().zip(&right) {
                        *a |= b;
                    }
                }
            }
        }
        // Slots row by row, columns ascending.
        let mut slot_of = std::collections::HashMap::new();
        let mut nnz = 0u32;
        for (k, row) in rows.iter().enumerate() {
            for c in ones(row) {
                slot_of.insert((k, c), nnz);
                nnz += 1;
            }
        }
        let slot = |i: usize, j: usize| slot_of[&(i, j)];
        let (mut entries, mut value_of) = (Vec::new(), Vec::new());
        let mut values = 0u32;
        for i in 0..n {
            for j in 0..n {
                if pattern[i * n + j] || i == j {
                    entries.push(((i * n + j) as u32, slot(pos[i], pos[j]), i == j));
                    value_of.push(if pattern[i * n + j] { values } else { u32::MAX });
                }
                values += u32::from(pattern[i * n + j]);
            }
        }
        let diag = (0..n).map(|k| slot(k, k)).collect();
        let (mut col, mut lower, mut upd) = (vec![0u32], Vec::new(), Vec::new());
        for k in 0..n {
            let right: Vec<usize> = ones(&rows[k]).filter(|&c| c > k).collect();
            for (i, row) in rows.iter().enumerate().skip(k + 1) {
                if bit(row, k) {
                    let from = upd.len() as u32;
                    upd.extend(right.iter().map(|&j| [slot(i, j), slot(k, j)]));
                    lower.push(LowerEntry {
                        slot: slot(i, k),
                        upd: [from, upd.len() as u32],
                    });
                }
            }
            col.push(lower.len() as u32);
        }
        let (mut lrow, mut lents, mut urow, mut uents) = (vec![0], Vec::new(), vec![0], Vec::new());
        for (k, row) in rows.iter().enumerate() {
            for c in ones(row) {
                let e = [c as u32, slot(k, c)];
                match c.cmp(&k) {
                    std::cmp::Ordering::Less => lents.push(e),
                    std::cmp::Ordering::Greater => uents.push(e),
                    std::cmp::Ordering::Equal => {}
                }
            }
            lrow.push(lents.len() as u32);
            urow.push(uents.len() as u32);
        }
        LuPlan {
            n,
            pattern: pattern.to_vec(),
            order,
            entries,
            value_of,
            diag,
            col,
            lower,
            upd,
            lrow,
            lents,
            urow,
            uents,
            nnz: nnz as usize,
        }
    }

    pub fn dim(&self) -> usize {
        self.n
    }

    /// The pattern the plan was made for.
    pub fn pattern(&self) -> &[bool] {
        &self.pattern
    }

    /// Entries of the factors (both triangles and the diagonal, fill-in included).
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// Whether the factors are sparse enough to beat a dense factorisation: at most half full.
    pub fn is_sparse(&self) -> bool {
        2 * self.nnz <= self.n * self.n
    }

    /// Multiply-adds of one factorisation.
    pub fn factor_ops(&self) -> usize {
        self.upd.len()
    }

    /// `order[k]`: the component eliminated k-th.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// Per structural entry of W: its row-major index in the n×n matrix, its slot, and whether
    /// it is on the diagonal.
    pub fn entries(&self) -> &[(u32, u32, bool)] {
        &self.entries
    }

    /// Slot of the k-th pivot.
    pub fn pivot(&self, k: usize) -> u32 {
        self.diag[k]
    }

    /// The entries below the k-th pivot.
    pub fn below(&self, k: usize) -> &[LowerEntry] {
        &self.lower[self.col[k] as usize..self.col[k + 1] as usize]
    }

    /// The updates `[target, source]` of one entry below a pivot.
    pub fn updates(&self, e: &LowerEntry) -> &[[u32; 2]] {
        &self.upd[e.upd[0] as usize..e.upd[1] as usize]
    }

    /// Row k of L left of the diagonal: `[column position, slot]`.
    pub fn l_row(&self, k: usize) -> &[[u32; 2]] {
        &self.lents[self.lrow[k] as usize..self.lrow[k + 1] as usize]
    }

    /// Row k of U right of the diagonal: `[column position, slot]`.
    pub fn u_row(&self, k: usize) -> &[[u32; 2]] {
        &self.uents[self.urow[k] as usize..self.urow[k + 1] as usize]
    }

    /// W = si·I − sj·J into `v` (the plan's slots, fill-in zero), from the dense n×n `jac`;
    /// each entry computed as the dense W's is.
    pub fn assemble(&self, jac: &[f64], si: f64, sj: f64, v: &mut [f64]) {
        v[..self.nnz].fill(0.0);
        for &(ij, s, on_diag) in &self.entries {
            let id = if on_diag { si } else { 0.0 };
            v[s as usize] = id - sj * jac[ij as usize];
        }
    }

    /// [`LuPlan::assemble`] from the Jacobian's entries where the pattern is true, in row-major
    /// order, instead of the dense matrix: the same values.
    pub fn assemble_values(&self, vals: &[f64], si: f64, sj: f64, v: &mut [f64]) {
        v[..self.nnz].fill(0.0);
        for (&(_, s, on_diag), &k) in self.entries.iter().zip(&self.value_of) {
            let id = if on_diag { si } else { 0.0 };
            let j = if k == u32::MAX { 0.0 } else { vals[k as usize] };
            v[s as usize] = id - sj * j;
        }
    }

    /// The dense n×n W = si·I − sj·J from the values of [`LuPlan::assemble_values`], as it is
    /// built from the dense Jacobian.
    pub fn dense_from_values(&self, vals: &[f64], si: f64, sj: f64, w: &mut [f64]) {
        let n = self.n;
        for (i, row) in w[..n * n].chunks_exact_mut(n).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                let id = if i == j { si } else { 0.0 };
                *x = id - sj * 0.0;
            }
        }
        for (&(ij, _, on_diag), &k) in self.entries.iter().zip(&self.value_of) {
            let id = if on_diag { si } else { 0.0 };
            let j = if k == u32::MAX { 0.0 } else { vals[k as usize] };
            w[ij as usize] = id - sj * j;
        }
    }

    /// Factorises `v` (from [`LuPlan::assemble`]) in place and puts each pivot's reciprocal in
    /// `inv`. False where a pivot fails [`PIVOT_THRESHOLD`] or a pivot's column is not finite:
    /// `v` is then spoilt, and the matrix is to be factorised with row exchanges.
    pub fn factor(&self, v: &mut [f64], inv: &mut [f64]) -> bool {
        for (k, inv_k) in inv.iter_mut().enumerate().take(self.n) {
            let p = v[self.diag[k] as usize];
            let below = self.below(k);
            let mut big = 0.0f64;
            let mut finite = p.is_finite();
            for e in below {
                let a = v[e.slot as usize].abs();
                finite &= a.is_finite();
                big = big.max(a);
            }
            if !finite || p == 0.0 || p.abs() < PIVOT_THRESHOLD * big {
                return false;
            }
            let r = 1.0 / p;
            *inv_k = r;
            for e in below {
                let f = v[e.slot as usize] * r;
                v[e.slot as usize] = f;
                if f != 0.0 {
                    for &[t, s] in self.updates(e) {
                        v[t as usize] -= f * v[s as usize];
                    }
                }
            }
        }
        true
    }

    /// Solves W x = b in place with the factors `v` and reciprocals `inv` of
    /// [`LuPlan::factor`]; `x` is scratch of n components.
    pub fn solve(&self, v: &[f64], inv: &[f64], b: &mut [f64], x: &mut [f64]) {
        let n = self.n;
        for (xk, &c) in x[..n].iter_mut().zip(&self.order) {
            *xk = b[c as usize];
        }
        for k in 0..n {
            let mut s = x[k];
            for &[c, sl] in self.l_row(k) {
                s -= v[sl as usize] * x[c as usize];
            }
            x[k] = s;
        }
        for k in (0..n).rev() {
            let mut s = x[k];
            for &[c, sl] in self.u_row(k) {
                s -= v[sl as usize] * x[c as usize];
            }
            x[k] = s * inv[k];
        }
        for (xk, &c) in x[..n].iter().zip(&self.order) {
            b[c as usize] = *xk;
        }
    }
}

/// A plan shared by every workspace that factorises a W of its pattern (made once per pattern
/// in a process, not once per thread or subject), with its solve as native code where the
/// `jit` feature, `VPOP_CPU_JIT` and the host allow: the same operations in the same order as
/// [`LuPlan::solve`], so the same results.
#[derive(Debug)]
pub struct SharedPlan {
    plan: LuPlan,
    #[cfg(feature = "jit")]
    native: Option<super::sparse_jit::NativeSolve>,
}

impl std::ops::Deref for SharedPlan {
    type Target = LuPlan;

    fn deref(&self) -> &LuPlan {
        &self.plan
    }
}

impl SharedPlan {
    /// The plan of `pattern` (n×n), made on first use and kept with the few made last.
    pub fn get(n: usize, pattern: &[bool]) -> std::sync::Arc<SharedPlan> {
        use std::sync::{Arc, Mutex};
        const KEPT: usize = 8;
        static MADE: Mutex<Vec<Arc<SharedPlan>>> = Mutex::new(Vec::new());
        // A thread that panicked holding the lock left the list whole (it only pushes and
        // removes), so its contents stay usable.
        let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = made
            .iter()
            .position(|p| p.dim() == n && p.pattern() == pattern)
        {
            let p = made.remove(i);
            made.push(p.clone());
            return p;
        }
        let p = Arc::new(SharedPlan::new(LuPlan::new(n, pattern)));
        if made.len() == KEPT {
            made.remove(0);
        }
        made.push(p.clone());
        p
    }

    /// `plan` with its solve compiled where it is sparse and native code is on.
    pub fn new(plan: LuPlan) -> SharedPlan {
        #[cfg(feature = "jit")]
        {
            let native = (plan.is_sparse() && crate::model::exec::native_code())
                .then(|| super::sparse_jit::NativeSolve::new(&plan))
                .and_then(|made| match made {
                    Ok(f) => Some(f),
                    Err(why) => {
                        static ONCE: std::sync::Once = std::sync::Once::new();
                        ONCE.call_once(|| {
                            eprintln!("vpop: sparse solves interpreted on the CPU ({why})")
                        });
                        None
                    }
                });
            SharedPlan { plan, native }
        }
        #[cfg(not(feature = "jit"))]
        SharedPlan { plan }
    }

    /// Whether the solve runs as native code.
    pub fn is_native(&self) -> bool {
        #[cfg(feature = "jit")]
        return self.native.is_some();
        #[cfg(not(feature = "jit"))]
        false
    }

    /// [`LuPlan::solve`], by the native code where there is some.
    #[inline]
    pub fn solve(&self, v: &[f64], inv: &[f64], b: &mut [f64], x: &mut [f64]) {
        #[cfg(feature = "jit")]
        if let Some(f) = &self.native {
            return f.solve(v, inv, b);
        }
        self.plan.solve(v, inv, b, x)
    }
}

/// Minimum-degree elimination order of the symmetrised pattern (ties to the lowest index):
/// the component with the fewest neighbours goes next, and its neighbours become neighbours of
/// each other (the fill its elimination causes).
///
/// Components whose pivot would be W's identity part alone while entries below it are not
/// (J's diagonal structurally zero, something else depending on the component) go after every
/// other candidate: such a pivot is 1/(hγ), and fails the threshold test as soon as the step
/// grows past 10/(γ·|coupling|), whatever the values. Eliminating a neighbour first usually
/// gives the component a diagonal entry from J (fill in W[i][i] through W[i][v]·W[v][i]), and
/// for a state that no other depends on (an accumulated amount, an AUC) the column below is
/// empty and the pivot always passes. The fill is followed on the unsymmetric structure.
fn min_degree_order(n: usize, pattern: &[bool], words: usize) -> Vec<u32> {
    let mut adj: Vec<Bits> = vec![vec![0; words]; n];
    // rows[i]: where W[i][·] has J entries (J's diagonal included); cols its transpose.
    let mut rows: Vec<Bits> = vec![vec![0; words]; n];
    let mut cols: Vec<Bits> = vec![vec![0; words]; n];
    for i in 0..n {
        for j in 0..n {
            if i != j && (pattern[i * n + j] || pattern[j * n + i]) {
                set(&mut adj[i], j);
            }
            if pattern[i * n + j] {
                set(&mut rows[i], j);
                set(&mut cols[j], i);
            }
        }
    }
    let mut alive = vec![0u64; words];
    for i in 0..n {
        set(&mut alive, i);
    }
    let degree = |a: &Bits, alive: &Bits| -> u32 {
        a.iter().zip(alive).map(|(x, y)| (x & y).count_ones()).sum()
    };
    // Whether v's pivot may be the identity part alone with entries below it.
    let exposed = |v: usize, rows: &[Bits], cols: &[Bits], alive: &Bits| {
        !bit(&rows[v], v) && ones(&cols[v]).filter(|&i| i != v).any(|i| bit(alive, i))
    };
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let v = ones(&alive)
            .min_by_key(|&v| (exposed(v, &rows, &cols, &alive), degree(&adj[v], &alive), v))
            .expect("a component left");
        order.push(v as u32);
        alive[v / 64] &= !(1 << (v % 64));
        let nb: Bits = adj[v].iter().zip(&alive).map(|(x, y)| x & y).collect();
        for u in ones(&nb) {
            for (a, b) in adj[u].iter_mut().zip(&nb) {
                *a |= b;
            }
            adj[u][u / 64] &= !(1 << (u % 64));
        }
        // The unsymmetric fill: each remaining row with an entry in column v takes row v's.
        let right: Bits = rows[v].iter().zip(&alive).map(|(x, y)| x & y).collect();
        let below: Vec<usize> = ones(&cols[v]).filter(|&i| bit(&alive, i)).collect();
        for &i in &below {
            for (a, b) in rows[i].iter_mut().zip(&right) {
                *a |= b;
            }
            for j in ones(&right) {
                set(&mut cols[j], i);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::{lu_factor, lu_solve};

    fn xorshift(mut seed: u64) -> impl FnMut() -> f64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    /// Patterns of the kinds large models have (a transit chain with a feedback, a hub coupled
    /// to everything, random sparse graphs, a dense block, a zero diagonal): the plan's solve of
    /// W x = b agrees with the dense pivoted LU within round-off, the fill-in covers what the
    /// elimination touches (every update's target and source is a slot), and a chain's factors
    /// stay as sparse as the chain.
    #[test]
    fn solves_as_the_dense_factorisation_does() {
        let mut u = xorshift(0x2545_f491_4f6c_dd1d);
        for n in [1usize, 2, 3, 9, 17, 40, 70, 130] {
            for kind in 0..5 {
                let mut pattern = vec![false; n * n];
                for i in 0..n {
                    for j in 0..n {
                        pattern[i * n + j] = match kind {
                            // Chain i−1 → i with a feedback from the last to the first.
                            0 => (i == j || j + 1 == i) || (i == 0 && j == n - 1),
                            // A hub (component n/2) coupled both ways to every other.
                            1 => i == j || i == n / 2 || j == n / 2,
                            // Random, about three entries per row, diagonal not always there.
                            2 => u() > 0.5 - 3.0 / n as f64,
                            // Dense.
                            3 => true,
                            // A chain with an empty diagonal after the first component.
                            _ => j + 1 == i || (i == 0 && j == 0),
                        };
                    }
                }
                let plan = LuPlan::new(n, &pattern);
                assert_eq!(plan.dim(), n);
                let mut sorted: Vec<u32> = plan.order().to_vec();
                sorted.sort();
                assert!(
                    sorted.iter().copied().eq(0..n as u32),
                    "order a permutation"
                );
                for k in 0..n {
                    for e in plan.below(k) {
                        for &[t, s] in plan.updates(e) {
                            assert!((t as usize) < plan.nnz() && (s as usize) < plan.nnz());
                        }
                    }
                }
                if kind == 0 {
                    assert!(plan.nnz() <= 4 * n, "chain n {n}: {} entries", plan.nnz());
                }
                // J with entries where the pattern has them; W = si·I − sj·J is
                // diagonally dominant by columns for a small step (si large).
                let mut jac = vec![0.0; n * n];
                for (ij, p) in pattern.iter().enumerate() {
                    if *p {
                        jac[ij] = u() * 4.0;
                    }
                }
                let (si, sj) = (3.0 * n as f64, 1.0);
                let mut v = vec![0.0; plan.nnz()];
                let mut inv = vec![0.0; n];
                plan.assemble(&jac, si, sj, &mut v);
                // From the pattern's entries alone: the same values, bit for bit.
                let vals: Vec<f64> = (0..n * n).filter(|&k| pattern[k]).map(|k| jac[k]).collect();
                let mut from_vals = vec![f64::NAN; plan.nnz()];
                plan.assemble_values(&vals, si, sj, &mut from_vals);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&from_vals), bits(&v), "n {n} kind {kind}");
                assert!(plan.factor(&mut v, &mut inv), "n {n} kind {kind}");
                let mut w = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        let id = if i == j { si } else { 0.0 };
                        w[i * n + j] = id - sj * jac[i * n + j];
                    }
                }
                let mut w_vals = vec![f64::NAN; n * n];
                plan.dense_from_values(&vals, si, sj, &mut w_vals);
                assert_eq!(bits(&w_vals), bits(&w), "n {n} kind {kind}");
                let b: Vec<f64> = (0..n).map(|_| u() * 10.0).collect();
                let mut dense = b.clone();
                let (mut lu, mut piv) = (w.clone(), vec![0; n]);
                assert!(lu_factor(&mut lu, &mut piv, n));
                lu_solve(&lu, &piv, n, &mut dense);
                let mut sparse = b.clone();
                plan.solve(&v, &inv, &mut sparse, &mut vec![0.0; n]);
                // The native solve computes the interpreter's values bit for bit (here and
                // with zeros of both signs, infinities and NaN in b).
                let shared = SharedPlan::new(plan.clone());
                assert_eq!(
                    shared.is_native(),
                    cfg!(feature = "jit") && plan.is_sparse() && crate::model::exec::native_code(),
                    "n {n} kind {kind}"
                );
                let mut odd = b.clone();
                for (i, x) in odd.iter_mut().enumerate() {
                    *x = [0.0, -0.0, f64::INFINITY, f64::NAN, *x][i % 5];
                }
                for rhs in [&b, &odd] {
                    let (mut native, mut interpreted) = (rhs.clone(), rhs.clone());
                    shared.solve(&v, &inv, &mut native, &mut vec![0.0; n]);
                    plan.solve(&v, &inv, &mut interpreted, &mut vec![0.0; n]);
                    assert_eq!(bits(&native), bits(&interpreted), "n {n} kind {kind}");
                }
                for i in 0..n {
                    assert!(
                        (sparse[i] - dense[i]).abs() <= 1e-13 * (1.0 + dense[i].abs()),
                        "n {n} kind {kind} component {i}: {} vs {}",
                        sparse[i],
                        dense[i]
                    );
                    // And it solves the system itself.
                    let r: f64 = (0..n).map(|j| w[i * n + j] * sparse[j]).sum::<f64>() - b[i];
                    assert!(r.abs() <= 1e-11 * (1.0 + b[i].abs()), "residual {r}");
                }
            }
        }
    }

    /// A plan is made once per pattern and shared: the same pattern gives the same plan,
    /// another pattern another.
    #[test]
    fn plans_are_shared_by_pattern() {
        let n = 12;
        let chain: Vec<bool> = (0..n * n)
            .map(|k| k / n == k % n || k / n == k % n + 1)
            .collect();
        let mut hub = chain.clone();
        hub[n / 2] = true;
        let a = SharedPlan::get(n, &chain);
        let b = SharedPlan::get(n, &chain);
        let c = SharedPlan::get(n, &hub);
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
        assert_eq!(a.pattern(), &chain[..]);
        assert_eq!(c.pattern(), &hub[..]);
        assert_eq!(**a, LuPlan::new(n, &chain));
    }

    /// A state with no derivative of its own that another depends on (y0' = −k·y1,
    /// y1' = k·(y0 − y1), a transit chain after them) is eliminated after its neighbour, so its
    /// pivot is not 1/(hγ) alone: W factorises along the plan at any step size, where taking it
    /// first (the lowest index among the smallest degrees) fails the threshold once
    /// hγ > 10/k. The same state with a diagonal of its own keeps the plain order, and so does
    /// one that nothing depends on (an accumulated amount).
    #[test]
    fn a_state_without_a_diagonal_goes_after_what_it_is_coupled_to() {
        const N: usize = 10;
        let pos = |plan: &LuPlan, c: u32| plan.order().iter().position(|&o| o == c).unwrap();
        let chain = |i: usize, j: usize| i >= 2 && (j == i || j + 1 == i);
        for diagonal in [false, true] {
            let mut pattern = vec![false; N * N];
            for i in 0..N {
                for j in 0..N {
                    pattern[i * N + j] = matches!((i, j), (0, 1) | (1, 0) | (1, 1))
                        || (diagonal && i == 0 && j == 0)
                        || chain(i, j);
                }
            }
            let plan = LuPlan::new(N, &pattern);
            assert_eq!(
                pos(&plan, 0) > pos(&plan, 1),
                !diagonal,
                "{:?}",
                plan.order()
            );
            assert_eq!(plan.order()[0] == 0, diagonal, "{:?}", plan.order());
            // As sparse as the pattern: no fill-in either way.
            assert_eq!(plan.nnz(), 20);
            let k = 1000.0;
            let mut jac = vec![0.0; N * N];
            jac[1] = -k;
            jac[N] = k;
            jac[N + 1] = -k;
            for i in 2..N {
                jac[i * N + i - 1] = 0.5;
                jac[i * N + i] = -0.5;
            }
            // Steps from hγ = 1e-4 to 10: the pivot test fails for the state taken first
            // with a zero value on J's diagonal (1/(hγ) < 0.1·k) past hγ = 1e-2.
            for hg in [1e-4, 3e-3, 0.03, 1.0, 10.0] {
                let (si, sj) = (1.0 / hg, 1.0);
                let (mut v, mut inv) = (vec![0.0; plan.nnz()], vec![0.0; N]);
                plan.assemble(&jac, si, sj, &mut v);
                let passes = plan.factor(&mut v, &mut inv);
                assert_eq!(passes, !diagonal || 1.0 / hg >= 0.1 * k, "hγ {hg}");
                if !passes {
                    continue;
                }
                let mut w = vec![0.0; N * N];
                for (ij, x) in w.iter_mut().enumerate() {
                    *x = if ij % (N + 1) == 0 { si } else { 0.0 } - sj * jac[ij];
                }
                let b: Vec<f64> = (0..N).map(|i| 1.0 + i as f64).collect();
                let mut x = b.clone();
                plan.solve(&v, &inv, &mut x, &mut [0.0; N]);
                for i in 0..N {
                    let r: f64 = (0..N).map(|j| w[i * N + j] * x[j]).sum::<f64>() - b[i];
                    assert!(
                        r.abs() <= 1e-12 * (1.0 + b[i]),
                        "hγ {hg} row {i}: residual {r}"
                    );
                }
            }
        }
        // y0' = y5 (nothing depends on y0, no diagonal): its column below is empty, the pivot
        // always passes, and it goes first (degree 1, lowest index).
        let mut pattern = vec![false; N * N];
        pattern[5] = true;
        for i in 1..N {
            pattern[i * N + i] = true;
            if i > 1 {
                pattern[i * N + i - 1] = true;
            }
        }
        assert_eq!(LuPlan::new(N, &pattern).order()[0], 0);
    }

    /// A pivot below the threshold (here a zero diagonal where a row exchange is needed) and a
    /// non-finite entry are refused, for the caller's dense factorisation to decide.
    #[test]
    fn refuses_small_pivots_and_non_finite_columns() {
        // [[0, 1], [1, 0]]: the first pivot is 0.
        let pattern = vec![false, true, true, false];
        let plan = LuPlan::new(2, &pattern);
        let jac = vec![0.0, -1.0, -1.0, 0.0];
        let (mut v, mut inv) = (vec![0.0; plan.nnz()], vec![0.0; 2]);
        plan.assemble(&jac, 0.0, 1.0, &mut v);
        assert!(!plan.factor(&mut v, &mut inv));
        // [[0.05, 1], [1, 1]]: 0.05 < 0.1·1.
        plan.assemble(&[0.0, -1.0, -1.0, 0.0], 0.05, 1.0, &mut v);
        // The diagonal of J is not in the pattern, so W's diagonal is si alone.
        assert!(!plan.factor(&mut v, &mut inv));
        // [[0.2, 1], [1, 0.2]]: passes the threshold test.
        plan.assemble(&[0.0, -1.0, -1.0, 0.0], 0.2, 1.0, &mut v);
        assert!(plan.factor(&mut v, &mut inv));
        let mut b = [1.2, 1.2];
        plan.solve(&v, &inv, &mut b, &mut [0.0; 2]);
        assert!(
            (b[0] - 1.0).abs() < 1e-15 && (b[1] - 1.0).abs() < 1e-15,
            "{b:?}"
        );
        for bad in [f64::NAN, f64::INFINITY] {
            plan.assemble(&[0.0, -1.0, -bad, 0.0], 2.0, 1.0, &mut v);
            assert!(!plan.factor(&mut v, &mut inv), "{bad}");
        }
    }
}
