//! The populations that ship in `populations/` against the published figures they encode:
//! CYP2C19 and CYP2D6 phenotype frequencies by ancestry, CDC 2000 weight- and stature-for-age
//! percentiles by sex and age, Child–Pugh scores and the albumin and liver size of cirrhosis by
//! class, the obesity classes of US adults by sex and lean body weight, bounds, and finite
//! parameters. The expected values are written here from the sources, not read from the files.

use std::path::Path;

use vpop::model::{library, Model};
use vpop::population::dist::{norm_cdf, norm_ppf};
use vpop::population::{Population, SampledChunk};

fn load(file: &str) -> Population {
    Population::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("populations")
            .join(file),
    )
    .unwrap()
}

fn col<'a>(p: &Population, c: &'a SampledChunk, name: &str) -> &'a [f64] {
    if let Some(i) = p.covariate_names().iter().position(|n| *n == name) {
        return &c.covariates[i];
    }
    let i = p.parameter_names().iter().position(|n| *n == name).unwrap();
    &c.parameters[i]
}

/// The code of `label` in categorical covariate `name`.
fn code(p: &Population, name: &str, label: &str) -> f64 {
    let c = p.covariate_names().iter().position(|n| *n == name).unwrap();
    p.covariate_labels(c)
        .unwrap()
        .iter()
        .position(|l| l == label)
        .unwrap_or_else(|| panic!("{name} has no label {label}")) as f64
}

/// Every parameter finite and positive, and the parameters those of the `two_cmt_oral` model.
fn check_parameters(p: &Population, c: &SampledChunk) {
    let lib = library::get("two_cmt_oral").unwrap();
    let model = Model::parse(lib.name, lib.source).unwrap();
    let want: Vec<&str> = model.params.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(p.parameter_names(), want);
    for (name, values) in p.parameter_names().iter().zip(&c.parameters) {
        assert!(
            values.iter().all(|v| v.is_finite() && *v > 0.0),
            "{name}: a non-finite or non-positive value"
        );
    }
}

#[test]
fn phenotype_frequencies_by_ancestry_match_their_sources() {
    let p = load("cyp_phenotypes.toml");
    let n = 200_000;
    let mut c = SampledChunk::default();
    p.sample(11, 0, n, &mut c);
    check_parameters(&p, &c);
    let anc = col(&p, &c, "ancestry");

    // CYP2C19, Personalized Medicine 2022;19(4):327–339, Table 3 (phenotype frequencies of
    // *1/*2/*3/*17 diplotypes): NM, UM, RM, IM as printed, PM the remainder.
    let cyp2c19 = |nm: f64, um: f64, rm: f64, im: f64| {
        [
            ("pm", 1.0 - nm - um - rm - im),
            ("im", im),
            ("nm", nm),
            ("rm", rm),
            ("um", um),
        ]
    };
    let c19 = [
        ("european", cyp2c19(0.406, 0.047, 0.276, 0.248)),
        ("japanese", cyp2c19(0.321, 0.0, 0.016, 0.440)),
    ];
    // CYP2D6, CPIC/PharmGKB CYP2D6 frequency table (2024 copy): diplotype frequencies of the
    // European and East Asian groups summed by the phenotype of the CPIC Diplotype–Phenotype
    // Table (2024). The Japanese ancestry takes the East Asian group.
    let d6 = [
        (
            "european",
            [
                ("pm", 0.06502),
                ("im", 0.38253),
                ("nm", 0.49188),
                ("indeterminate", 0.03725),
                ("um", 0.02331),
            ],
        ),
        (
            "japanese",
            [
                ("pm", 0.00794),
                ("im", 0.38250),
                ("nm", 0.53830),
                ("indeterminate", 0.06265),
                ("um", 0.00859),
            ],
        ),
    ];

    // Ancestry 50/50 (design): within 3 standard errors.
    let eu = anc
        .iter()
        .filter(|a| **a == code(&p, "ancestry", "european"))
        .count() as f64
        / n as f64;
    assert!(
        (eu - 0.5).abs() <= 3.0 * (0.25 / n as f64).sqrt(),
        "European fraction {eu}"
    );

    let check = |gene: &str, ancestry: &str, want: &[(&str, f64)]| {
        let a = code(&p, "ancestry", ancestry);
        let ph = col(&p, &c, gene);
        let idx: Vec<usize> = (0..n).filter(|i| anc[*i] == a).collect();
        let m = idx.len() as f64;
        let total: f64 = want.iter().map(|(_, w)| w).sum();
        assert!(
            (total - 1.0).abs() < 1e-4,
            "{gene} {ancestry}: sums to {total}"
        );
        for (label, w) in want {
            let k = code(&p, gene, label);
            let f = idx.iter().filter(|i| ph[**i] == k).count() as f64 / m;
            if *w == 0.0 {
                assert_eq!(
                    f, 0.0,
                    "{gene} {ancestry} {label}: {f} where the source has none"
                );
                continue;
            }
            let se = (w * (1.0 - w) / m).sqrt();
            assert!(
                (f - w).abs() <= 3.0 * se,
                "{gene} {ancestry} {label}: sampled {f:.5} vs {w:.5} (3 SE = {:.5})",
                3.0 * se
            );
        }
    };
    for (ancestry, want) in &c19 {
        check("cyp2c19", ancestry, want);
    }
    for (ancestry, want) in &d6 {
        check("cyp2d6", ancestry, want);
    }

    // Weight is truncated to [40, 150] kg.
    assert!(col(&p, &c, "wt").iter().all(|w| (40.0..=150.0).contains(w)));
    // Clearance: poor metabolisers of both genes keep only the non-CYP fraction (1 − 0.4 − 0.4).
    let (c19c, d6c, wt, cl) = (
        col(&p, &c, "cyp2c19"),
        col(&p, &c, "cyp2d6"),
        col(&p, &c, "wt"),
        col(&p, &c, "cl"),
    );
    let (pm19, pm2d6) = (code(&p, "cyp2c19", "pm"), code(&p, "cyp2d6", "pm"));
    let both_pm: Vec<usize> = (0..n)
        .filter(|i| c19c[*i] == pm19 && d6c[*i] == pm2d6)
        .collect();
    assert!(!both_pm.is_empty());
    let eta_cl = &c.etas[p.eta_names().iter().position(|e| *e == "eta_cl").unwrap()];
    for i in both_pm {
        let want = 5.0 * (wt[i] / 70.0).powf(0.75) * 0.2 * eta_cl[i].exp();
        assert!((cl[i] - want).abs() < 1e-12 * want);
    }
}

/// A CDC 2000 growth-chart row: sex (1 boys, 2 girls), age in months, L, M, S, P10, P90.
type CdcRow = (u8, f64, f64, f64, f64, f64, f64);

// CDC 2000 growth charts (NCHS; Kuczmarski et al. 2002, Vital Health Stat 11(246)), wtage.csv.
const WEIGHT_FOR_AGE: [CdcRow; 12] = [
    (
        1,
        24.0,
        -0.20615245,
        12.6707633,
        0.108125811,
        11.05265567,
        14.58339799,
    ),
    (
        1,
        45.5,
        -0.86869965,
        15.80872535,
        0.117641148,
        13.72043155,
        18.58127627,
    ),
    (
        1,
        105.5,
        -1.355720571,
        27.90904433,
        0.163774719,
        23.20221593,
        35.72793225,
    ),
    (
        1,
        165.5,
        -0.640056805,
        49.87187409,
        0.192705974,
        39.65325233,
        65.25318239,
    ),
    (
        1,
        201.5,
        -0.933544683,
        63.89958662,
        0.167043722,
        52.57010692,
        81.1369598,
    ),
    (
        1,
        216.5,
        -1.066224038,
        67.28992603,
        0.161922819,
        55.78730622,
        85.07640364,
    ),
    (
        2,
        24.0,
        -0.73533951,
        12.05503983,
        0.107399495,
        10.57373483,
        13.93766409,
    ),
    (
        2,
        45.5,
        -1.143135936,
        15.37262729,
        0.128990225,
        13.21264896,
        18.46379435,
    ),
    (
        2,
        105.5,
        -1.008521695,
        28.24520531,
        0.182037118,
        22.90632506,
        36.85163675,
    ),
    (
        2,
        165.5,
        -1.054846957,
        48.69017613,
        0.191020995,
        39.16231542,
        64.62888901,
    ),
    (
        2,
        201.5,
        -1.805281675,
        54.90609842,
        0.162905415,
        45.99173597,
        71.35395381,
    ),
    (
        2,
        216.5,
        -1.850946286,
        56.22969564,
        0.16036959,
        47.24157543,
        72.82563495,
    ),
];

// The same, statage.csv.
const STATURE_FOR_AGE: [CdcRow; 12] = [
    (
        1,
        24.0,
        0.941523967,
        86.45220101,
        0.040321528,
        81.99171445,
        90.92619137,
    ),
    (
        1,
        45.5,
        0.602595306,
        100.7783198,
        0.041076485,
        95.52887815,
        106.1387493,
    ),
    (
        1,
        105.5,
        0.40391127,
        132.3840348,
        0.045905281,
        124.7319249,
        140.3092555,
    ),
    (
        1,
        165.5,
        1.456720479,
        162.2865119,
        0.049506051,
        151.8347622,
        172.4392666,
    ),
    (
        1,
        201.5,
        1.825245107,
        175.0181691,
        0.041725679,
        165.4424364,
        184.1797333,
    ),
    (
        1,
        216.5,
        1.399999187,
        176.1850208,
        0.04064364,
        166.9093676,
        185.2692255,
    ),
    (
        2,
        24.0,
        1.07244896,
        84.97555512,
        0.040791394,
        80.52476467,
        89.40951159,
    ),
    (
        2,
        45.5,
        0.301955463,
        99.33939735,
        0.042947412,
        93.97609374,
        104.9127666,
    ),
    (
        2,
        105.5,
        0.043619747,
        131.8593015,
        0.046585611,
        124.2077692,
        139.9604267,
    ),
    (
        2,
        165.5,
        1.008254396,
        159.9057871,
        0.041495379,
        151.4003414,
        168.4074983,
    ),
    (
        2,
        201.5,
        0.985571579,
        162.8531067,
        0.039747815,
        154.5606528,
        171.1516601,
    ),
    (
        2,
        216.5,
        1.047571238,
        163.1307866,
        0.039687311,
        154.8235077,
        171.4179802,
    ),
];

/// The LMS quantile X = M (1 + L S z)^(1/L) and its derivative dX/dz.
fn lms(l: f64, m: f64, s: f64, z: f64) -> (f64, f64) {
    let b = 1.0 + l * s * z;
    (m * b.powf(1.0 / l), m * s * b.powf(1.0 / l - 1.0))
}

/// The p-quantile of `x` (sorted in place; nearest rank).
fn quantile(x: &mut [f64], p: f64) -> f64 {
    x.sort_by(|a, b| a.total_cmp(b));
    x[((p * x.len() as f64) as usize).min(x.len() - 1)]
}

#[test]
fn paediatric_growth_follows_the_cdc_charts() {
    let p = load("paediatric.toml");
    // Ages tested: midway between the file's 6-monthly rows, where its linear interpolation is
    // least exact; subjects within ±1.5 months of each.
    let ages = [45.5, 105.5, 165.5, 201.5];
    let half_bin = 1.5;
    let (n, chunk) = (2_000_000usize, 250_000usize);
    // bins[variable][row] gathers the sampled values of the subjects near that row's age.
    let mut bins = vec![vec![Vec::new(); WEIGHT_FOR_AGE.len()]; 2];
    let (mut females, mut c) = (0usize, SampledChunk::default());
    let (male, female) = (code(&p, "sex", "male"), code(&p, "sex", "female"));
    // Bounds: the file holds draws beyond the 1st/99th percentile at those percentiles, so no
    // weight (height) lies below the girls' 1st percentile at 2 y or above the boys' 99th
    // percentile at 18 y (LMS; 1e-4 relative for the rounding of the file's values).
    let bounds = |t: &[CdcRow; 12]| {
        let z = norm_ppf(0.99);
        let lo = t
            .iter()
            .filter(|r| r.1 == 24.0)
            .map(|r| lms(r.2, r.3, r.4, -z).0);
        let hi = t
            .iter()
            .filter(|r| r.1 == 216.5)
            .map(|r| lms(r.2, r.3, r.4, z).0);
        (lo.fold(f64::INFINITY, f64::min), hi.fold(0.0, f64::max))
    };
    let (wt_bounds, ht_bounds) = (bounds(&WEIGHT_FOR_AGE), bounds(&STATURE_FOR_AGE));
    for first in (0..n).step_by(chunk) {
        p.sample(3, first as u64, chunk, &mut c);
        check_parameters(&p, &c);
        let (sex, age, wt, ht) = (
            col(&p, &c, "sex"),
            col(&p, &c, "age"),
            col(&p, &c, "wt"),
            col(&p, &c, "height"),
        );
        let (bmi, bsa, fmat) = (col(&p, &c, "bmi"), col(&p, &c, "bsa"), col(&p, &c, "fmat"));
        for i in 0..chunk {
            assert!(sex[i] == male || sex[i] == female);
            females += (sex[i] == female) as usize;
            assert!((2.0..=18.0).contains(&age[i]), "age {}", age[i]);
            assert!(
                wt[i] >= wt_bounds.0 * (1.0 - 1e-4) && wt[i] <= wt_bounds.1 * (1.0 + 1e-4),
                "weight {} outside {wt_bounds:?}",
                wt[i]
            );
            assert!(
                ht[i] >= ht_bounds.0 * (1.0 - 1e-4) && ht[i] <= ht_bounds.1 * (1.0 + 1e-4),
                "height {} outside {ht_bounds:?}",
                ht[i]
            );
            // Derived covariates: BMI, Mosteller BSA, and the GFR maturation of Rhodin et al.
            // (2009): TM50 47.7 weeks postmenstrual age, Hill 3.4, birth at 40 weeks.
            assert!((bmi[i] - wt[i] / (ht[i] / 100.0).powi(2)).abs() < 1e-9 * bmi[i]);
            assert!((bsa[i] - (ht[i] * wt[i] / 3600.0).sqrt()).abs() < 1e-12);
            let pma = 40.0 + age[i] * 365.25 / 7.0;
            let want = 1.0 / (1.0 + (47.7 / pma).powf(3.4));
            assert!((fmat[i] - want).abs() < 1e-12 && fmat[i] > 0.977);
            for (r, row) in WEIGHT_FOR_AGE.iter().enumerate() {
                let s = if row.0 == 1 { male } else { female };
                if sex[i] == s && (12.0 * age[i] - row.1).abs() <= half_bin {
                    bins[0][r].push(wt[i]);
                    bins[1][r].push(ht[i]);
                }
            }
        }
    }
    let f = females as f64 / n as f64;
    assert!(
        (f - 0.5).abs() <= 3.0 * (0.25 / n as f64).sqrt(),
        "female fraction {f}"
    );

    // P10, P50 (= M) and P90 near each age against the chart. Tolerance: 3 standard errors of
    // the sample quantile (density from the row's L, M, S) plus 0.5 % for the file's linear
    // interpolation between 6-monthly rows (≤ 0.2 % at the rows in between) and the spread of
    // ages within the bin (≤ 0.4 % at P90 of weight, less elsewhere).
    for (v, (table, what)) in [(&WEIGHT_FOR_AGE, "weight"), (&STATURE_FOR_AGE, "height")]
        .iter()
        .enumerate()
    {
        for (r, &(sex, months, l, m, s, p10, p90)) in table.iter().enumerate() {
            if !ages.contains(&months) {
                continue;
            }
            let x = &mut bins[v][r];
            let k = x.len() as f64;
            assert!(k > 10_000.0, "{what} at {months} months: only {k} subjects");
            for (prob, want) in [(0.1, p10), (0.5, m), (0.9, p90)] {
                let z = norm_ppf(prob);
                let (at, dxdz) = lms(l, m, s, z);
                assert!(
                    (at - want).abs() < 1e-3 * want,
                    "LMS and percentile disagree"
                );
                let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt() / dxdz;
                let se = (prob * (1.0 - prob) / k).sqrt() / density;
                let got = quantile(x, prob);
                let tol = 3.0 * se + 0.005 * want;
                assert!(
                    (got - want).abs() <= tol,
                    "{what}, sex {sex}, {months} months, P{}: sampled {got:.3} vs CDC {want:.3} \
                     (tolerance {tol:.3})",
                    prob * 100.0
                );
            }
        }
    }
}

/// A hepatic function group: label, Child–Pugh score bounds, serum albumin and functional liver
/// size as (mean, SD) fractions of healthy control values, and the typical unbound intrinsic
/// clearance as a fraction of normal.
type HepaticGroup = (&'static str, (f64, f64), (f64, f64), (f64, f64), f64);

#[test]
fn hepatic_impairment_follows_child_pugh_and_cirrhosis_physiology() {
    let p = load("hepatic_impairment.toml");
    let n = 200_000;
    let mut c = SampledChunk::default();
    p.sample(13, 0, n, &mut c);
    check_parameters(&p, &c);

    // Child–Pugh classes (Pugh et al. 1973, Br J Surg 60:646): A 5–6, B 7–9, C 10–15 points;
    // normal hepatic function scores the minimum, one point on each of the five criteria.
    // Albumin and functional liver size: Li, Barton & Maurer 2015, CPT Pharmacometrics Syst
    // Pharmacol 4:e39, physiological changes in cirrhosis by Child–Pugh grade (fractions of
    // healthy controls ± SD); normal hepatic function is the reference, 1.
    // Typical unbound clearance: 1/2 (A) and 1/3.5 (B), the inverse of the typical unbound AUC
    // ratios of Steelandt et al. 2015, Clin Pharmacokinet 54:1245; 1/6 (C) is the file's
    // illustrative value.
    let groups: [HepaticGroup; 4] = [
        ("normal", (5.0, 5.0), (1.0, 0.0), (1.0, 0.0), 1.0),
        ("mild", (5.0, 6.0), (0.84, 0.15), (0.91, 0.26), 1.0 / 2.0),
        (
            "moderate",
            (7.0, 9.0),
            (0.69, 0.15),
            (0.81, 0.26),
            1.0 / 3.5,
        ),
        (
            "severe",
            (10.0, 15.0),
            (0.53, 0.15),
            (0.64, 0.22),
            1.0 / 6.0,
        ),
    ];
    // The illustrative drug's unbound fraction in healthy subjects.
    let fu0 = 0.1;
    let (hep, cp, alb, liver) = (
        col(&p, &c, "hepatic"),
        col(&p, &c, "child_pugh"),
        col(&p, &c, "alb"),
        col(&p, &c, "liver"),
    );
    let (fu, clint, wt, cl, v2) = (
        col(&p, &c, "fu"),
        col(&p, &c, "clint"),
        col(&p, &c, "wt"),
        col(&p, &c, "cl"),
        col(&p, &c, "v2"),
    );
    let eta_cl = &c.etas[p.eta_names().iter().position(|e| *e == "eta_cl").unwrap()];

    let mut typical_cl = Vec::new();
    let mut median_cl = Vec::new();
    for (label, (lo, hi), (alb_mean, alb_sd), (liver_mean, liver_sd), clint_typ) in groups {
        let k = code(&p, "hepatic", label);
        let idx: Vec<usize> = (0..n).filter(|i| hep[*i] == k).collect();
        let m = idx.len() as f64;
        // Balanced enrolment (design): within 3 standard errors.
        let f = m / n as f64;
        assert!(
            (f - 0.25).abs() <= 3.0 * (0.25 * 0.75 / n as f64).sqrt(),
            "{label}: fraction {f}"
        );
        // Child–Pugh score: a whole number within the class, each score equally likely (design).
        let scores = (hi - lo) as usize + 1;
        let mut count = vec![0usize; scores];
        for &i in &idx {
            assert!(
                cp[i] == cp[i].floor() && cp[i] >= lo && cp[i] <= hi,
                "{label}: Child–Pugh score {}",
                cp[i]
            );
            count[(cp[i] - lo) as usize] += 1;
        }
        let w = 1.0 / scores as f64;
        for (s, k) in count.iter().enumerate() {
            let g = *k as f64 / m;
            assert!(
                (g - w).abs() <= 3.0 * (w * (1.0 - w) / m).sqrt() + 1e-12,
                "{label}: score {} in {g} of the class",
                lo + s as f64
            );
        }
        // Albumin and liver size: class means within 3 standard errors of the published means
        // (the file truncates its draws at ±2.5 SD, symmetrically, which keeps the mean and
        // narrows the SD, so the published SD bounds the standard error), and every value
        // within those bounds.
        for (what, x, mean, sd) in [
            ("albumin", alb, alb_mean, alb_sd),
            ("liver size", liver, liver_mean, liver_sd),
        ] {
            let got = idx.iter().map(|i| x[*i]).sum::<f64>() / m;
            let tol = 3.0 * sd / m.sqrt() + 1e-12;
            assert!(
                (got - mean).abs() <= tol,
                "{label} {what}: mean {got:.4} vs {mean} (tolerance {tol:.4})"
            );
            assert!(idx.iter().all(|i| {
                x[*i] > 0.0 && (x[*i] - mean).abs() <= 2.5 * sd * (1.0 + 1e-12) + 1e-12
            }));
        }
        for &i in &idx {
            // Unbound fraction by one-site binding to albumin (McNamara & Alcorn 2002).
            let want_fu = 1.0 / (1.0 + alb[i] * (1.0 - fu0) / fu0);
            assert!((fu[i] - want_fu).abs() < 1e-12, "fu {} vs {want_fu}", fu[i]);
            // Unbound intrinsic clearance ∝ liver size, at the typical value for the class mean.
            let want_clint = liver[i] / liver_mean * clint_typ;
            assert!((clint[i] - want_clint).abs() < 1e-12 * want_clint.max(1.0));
            // CL = fu · CLint,u on the healthy typical 5 L/h for 70 kg; peripheral volume ∝ fu.
            let want_cl =
                5.0 * (wt[i] / 70.0).powf(0.75) * (fu[i] / fu0) * clint[i] * eta_cl[i].exp();
            assert!((cl[i] - want_cl).abs() < 1e-12 * want_cl);
            let want_v2 = 60.0 * (wt[i] / 70.0) * (fu[i] / fu0);
            assert!((v2[i] - want_v2).abs() < 1e-12 * want_v2);
        }
        // Typical clearance: 70 kg, mean albumin and liver size, eta 0.
        let fu_typ = 1.0 / (1.0 + alb_mean * (1.0 - fu0) / fu0);
        typical_cl.push((label, 5.0 * fu_typ / fu0 * clint_typ));
        let mut x: Vec<f64> = idx.iter().map(|i| cl[*i]).collect();
        median_cl.push((label, quantile(&mut x, 0.5)));
    }
    // Clearance falls with the class: normal > A > B > C, typical and sampled medians.
    for v in [&typical_cl, &median_cl] {
        assert!(v.windows(2).all(|w| w[0].1 > w[1].1), "{v:?}");
    }
}

#[test]
fn obese_adults_follow_nhanes_obesity_classes_and_lean_body_weight() {
    let p = load("obese_adults.toml");
    let n = 200_000;
    let mut c = SampledChunk::default();
    p.sample(17, 0, n, &mut c);
    check_parameters(&p, &c);

    // NHANES 2017–2018, age-adjusted prevalence among US adults (Hales, Carroll, Fryar & Ogden
    // 2020, NCHS Data Brief 360): obesity (BMI ≥ 30) 43.0 % of men and 41.9 % of women, severe
    // obesity (BMI ≥ 40) 6.9 % and 11.5 %. The file's BMI is, per sex, the log-normal through
    // those two points, truncated to the obese range [30, 70] (70: the top of the BMI range of
    // the data of Janmahasatian et al. 2005).
    let (lo, hi) = (30.0f64, 70.0f64);
    let sexes = [("male", 0.430, 0.069), ("female", 0.419, 0.115)];
    let (sex, age, height, bmi, wt) = (
        col(&p, &c, "sex"),
        col(&p, &c, "age"),
        col(&p, &c, "height"),
        col(&p, &c, "bmi"),
        col(&p, &c, "wt"),
    );
    let (class, severe, bsa, lbw, ibw) = (
        col(&p, &c, "obesity_class"),
        col(&p, &c, "severe"),
        col(&p, &c, "bsa"),
        col(&p, &c, "lbw"),
        col(&p, &c, "ibw"),
    );
    let (cl, v1, q, v2) = (
        col(&p, &c, "cl"),
        col(&p, &c, "v1"),
        col(&p, &c, "q"),
        col(&p, &c, "v2"),
    );
    let eta = |name: &str| &c.etas[p.eta_names().iter().position(|e| *e == name).unwrap()];
    let (eta_cl, eta_v1) = (eta("eta_cl"), eta("eta_v1"));
    let female = code(&p, "sex", "female");

    // Reference subject: a man of 70 kg and 1.76 m, whose LBW (Janmahasatian et al. 2005) is
    // 56.13 kg and whose parameters are adult_healthy's typical values.
    let lbw_ref = 9270.0 * 70.0 / (6680.0 + 216.0 * 70.0 / (1.76f64 * 1.76));
    assert!((lbw_ref - 56.127).abs() < 1e-3, "{lbw_ref}");

    for i in 0..n {
        let f = sex[i] == female;
        assert!(f || sex[i] == code(&p, "sex", "male"));
        assert!((18.0..=65.0).contains(&age[i]), "age {}", age[i]);
        assert!((140.0..=210.0).contains(&height[i]), "height {}", height[i]);
        assert!((lo..=hi).contains(&bmi[i]), "BMI {}", bmi[i]);
        let h = height[i] / 100.0;
        assert!((wt[i] - bmi[i] * h * h).abs() <= 1e-12 * wt[i]);
        // WHO classes: I 30–34.9, II 35–39.9, III ≥ 40.
        let want_class = if bmi[i] >= 40.0 {
            3.0
        } else if bmi[i] >= 35.0 {
            2.0
        } else {
            1.0
        };
        assert_eq!(class[i], want_class, "BMI {}", bmi[i]);
        assert_eq!(severe[i], (bmi[i] >= 40.0) as u8 as f64);
        // Mosteller BSA; Janmahasatian LBW; Devine IBW (2.3 kg per inch over 60 inches).
        assert!((bsa[i] - (height[i] * wt[i] / 3600.0).sqrt()).abs() < 1e-12);
        let want_lbw = if f {
            9270.0 * wt[i] / (8780.0 + 244.0 * bmi[i])
        } else {
            9270.0 * wt[i] / (6680.0 + 216.0 * bmi[i])
        };
        assert!(
            (lbw[i] - want_lbw).abs() <= 1e-12 * want_lbw,
            "LBW {} vs {want_lbw}",
            lbw[i]
        );
        assert!(lbw[i] > 0.0 && lbw[i] < wt[i]);
        let want_ibw = if f { 45.5 } else { 50.0 } + 2.3 * (height[i] / 2.54 - 60.0);
        assert!((ibw[i] - want_ibw).abs() < 1e-12);
        // Clearance and central volume ∝ LBW, peripheral volume ∝ total body weight,
        // intercompartmental clearance as adult_healthy.
        let want_cl = 5.0 * lbw[i] / lbw_ref * eta_cl[i].exp();
        assert!((cl[i] - want_cl).abs() <= 1e-12 * want_cl);
        let want_v1 = 30.0 * lbw[i] / lbw_ref * eta_v1[i].exp();
        assert!((v1[i] - want_v1).abs() <= 1e-12 * want_v1);
        let want_q = 2.5 * (wt[i] / 70.0).powf(0.75);
        assert!((q[i] - want_q).abs() <= 1e-12 * want_q);
        let want_v2 = 60.0 * wt[i] / 70.0;
        assert!((v2[i] - want_v2).abs() <= 1e-12 * want_v2);
    }

    let fem = sex.iter().filter(|s| **s == female).count() as f64 / n as f64;
    assert!(
        (fem - 0.5).abs() <= 3.0 * (0.25 / n as f64).sqrt(),
        "female fraction {fem}"
    );

    for (label, p30, p40) in sexes {
        let k = code(&p, "sex", label);
        let idx: Vec<usize> = (0..n).filter(|i| sex[*i] == k).collect();
        let m = idx.len() as f64;
        // The log-normal through the two published points.
        let (z30, z40) = (norm_ppf(1.0 - p30), norm_ppf(1.0 - p40));
        let sigma = (40.0f64 / 30.0).ln() / (z40 - z30);
        let mu = 30.0f64.ln() - sigma * z30;
        let cdf = |x: f64| norm_cdf((x.ln() - mu) / sigma);
        let (c_lo, c_hi) = (cdf(lo), cdf(hi));
        // Class III among the obese: the published share p40 / p30, less the little the
        // truncation at 70 takes (≤ 0.0015); within 3 standard errors of that.
        let share3 = (c_hi - cdf(40.0)) / (c_hi - c_lo);
        assert!(
            (share3 - p40 / p30).abs() < 0.002,
            "{label}: {share3} vs {}",
            p40 / p30
        );
        // Class II among the obese: the log-normal's (no split of classes I and II by sex is
        // published for 2017–2018).
        let share2 = (cdf(40.0) - cdf(35.0)) / (c_hi - c_lo);
        for (cls, want) in [(3.0, share3), (2.0, share2), (1.0, 1.0 - share2 - share3)] {
            let got = idx.iter().filter(|i| class[**i] == cls).count() as f64 / m;
            let tol = 3.0 * (want * (1.0 - want) / m).sqrt();
            assert!(
                (got - want).abs() <= tol,
                "{label}, class {cls}: {got:.4} vs {want:.4} (tolerance {tol:.4})"
            );
        }
        // BMI P10, P50 and P90 among the obese: the truncated log-normal's quantiles, within 3
        // standard errors of the sample quantile (plus 1e-5 relative for the file's six-decimal
        // μ and σ).
        let mut x: Vec<f64> = idx.iter().map(|i| bmi[*i]).collect();
        for prob in [0.1, 0.5, 0.9] {
            let z = norm_ppf(c_lo + prob * (c_hi - c_lo));
            let want = (mu + sigma * z).exp();
            let density = (-0.5 * z * z).exp()
                / (2.0 * std::f64::consts::PI).sqrt()
                / (sigma * want)
                / (c_hi - c_lo);
            let tol = 3.0 * (prob * (1.0 - prob) / m).sqrt() / density + 1e-5 * want;
            let got = quantile(&mut x, prob);
            assert!(
                (got - want).abs() <= tol,
                "{label}, BMI P{}: {got:.3} vs {want:.3} (tolerance {tol:.3})",
                prob * 100.0
            );
        }
    }
}
