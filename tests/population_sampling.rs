//! Population sampling against its targets: moments (against closed forms of the stated
//! distributions), OMEGA correlations, truncation, categorical frequencies; reproducibility
//! across threads, chunkings, shards and single subjects; located errors for bad files.

use std::path::Path;

use vpop::population::dist::{norm_cdf, norm_ppf};
use vpop::population::{Population, SampledChunk};

fn adult() -> Population {
    Population::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("populations/adult_healthy.toml"))
        .unwrap()
}

fn col<'a>(p: &Population, c: &'a SampledChunk, name: &str) -> &'a [f64] {
    if let Some(i) = p.covariate_names().iter().position(|n| *n == name) {
        return &c.covariates[i];
    }
    if let Some(i) = p.eta_names().iter().position(|n| *n == name) {
        return &c.etas[i];
    }
    let i = p.parameter_names().iter().position(|n| *n == name).unwrap();
    &c.parameters[i]
}

/// Mean and variance of N(mu, sd²) truncated to [lo, hi] (closed form).
fn truncated_normal_moments(mu: f64, sd: f64, lo: f64, hi: f64) -> (f64, f64) {
    let (a, b) = ((lo - mu) / sd, (hi - mu) / sd);
    let phi = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let z = norm_cdf(b) - norm_cdf(a);
    let mean = mu + sd * (phi(a) - phi(b)) / z;
    let var = sd * sd * (1.0 + (a * phi(a) - b * phi(b)) / z - ((phi(a) - phi(b)) / z).powi(2));
    (mean, var)
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (
        m,
        (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

#[test]
fn moments_correlations_bounds_and_frequencies_match_the_targets() {
    let p = adult();
    let n = 1_000_000;
    let mut c = SampledChunk::default();
    p.sample(2024, 0, n, &mut c);

    // Sex: Bernoulli(0.5) — within 3 standard errors.
    let sex = col(&p, &c, "sex");
    let female = sex.iter().filter(|s| **s == 1.0).count() as f64 / n as f64;
    assert!(
        (female - 0.5).abs() < 3.0 * (0.25 / n as f64).sqrt(),
        "female fraction {female}"
    );

    // Age: normal(35, 10) truncated to [18, 55]; its mean in closed form.
    let (mean_t, var_t) = truncated_normal_moments(35.0, 10.0, 18.0, 55.0);
    let age = col(&p, &c, "age");
    let (m, sd) = mean_sd(age);
    assert!(
        (m - mean_t).abs() < 3.0 * var_t.sqrt() / (n as f64).sqrt(),
        "age mean {m} vs {mean_t}"
    );
    assert!(
        (sd - var_t.sqrt()).abs() < 0.02 * var_t.sqrt(),
        "age sd {sd} vs {}",
        var_t.sqrt()
    );
    assert!(
        age.iter().all(|x| (18.0..=55.0).contains(x)),
        "age outside its truncation"
    );

    // Height by sex: the NHANES means.
    for (code, mu, sd_t) in [(0.0, 175.3, 7.6), (1.0, 161.3, 7.1)] {
        let h: Vec<f64> = col(&p, &c, "height")
            .iter()
            .zip(sex)
            .filter(|(_, s)| **s == code)
            .map(|(h, _)| *h)
            .collect();
        let (m, _) = mean_sd(&h);
        // The file truncates height to [140, 210] cm.
        let (target, _) = truncated_normal_moments(mu, sd_t, 140.0, 210.0);
        assert!(
            (m - target).abs() < 3.0 * sd_t / (h.len() as f64).sqrt(),
            "height mean {m} vs {target}"
        );
    }
    let bmi = col(&p, &c, "bmi");
    assert!(
        bmi.iter().all(|x| (18.5..=32.0).contains(x)),
        "BMI outside its truncation"
    );
    // Derived covariates are their formulas.
    let (wt, ht) = (col(&p, &c, "wt"), col(&p, &c, "height"));
    for i in (0..n).step_by(9973) {
        assert!((wt[i] - bmi[i] * (ht[i] / 100.0).powi(2)).abs() < 1e-9 * wt[i]);
    }

    // Etas: variances ln(1 + CV²) and the stated correlation.
    let names = ["eta_cl", "eta_v1", "eta_ka"];
    let cv = [0.30f64, 0.20, 0.40];
    let etas: Vec<&[f64]> = names.iter().map(|e| col(&p, &c, e)).collect();
    for (k, e) in etas.iter().enumerate() {
        let (m, sd) = mean_sd(e);
        let want = (1.0 + cv[k] * cv[k]).ln().sqrt();
        assert!(
            m.abs() < 3.0 * want / (n as f64).sqrt(),
            "{} mean {m}",
            names[k]
        );
        assert!(
            (sd - want).abs() < 0.01 * want,
            "{} sd {sd} vs {want}",
            names[k]
        );
    }
    let corr = |x: &[f64], y: &[f64]| {
        let ((mx, sx), (my, sy)) = (mean_sd(x), mean_sd(y));
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - mx) * (b - my))
            .sum::<f64>()
            / ((n as f64 - 1.0) * sx * sy)
    };
    assert!((corr(etas[0], etas[1]) - 0.5).abs() < 0.01);
    assert!(corr(etas[0], etas[2]).abs() < 0.01 && corr(etas[1], etas[2]).abs() < 0.01);
    // The parameter model: cl = 5 (wt/70)^0.75 exp(eta_cl).
    let cl = col(&p, &c, "cl");
    for i in (0..n).step_by(7919) {
        let want = 5.0 * (wt[i] / 70.0).powf(0.75) * etas[0][i].exp();
        assert!((cl[i] - want).abs() < 1e-12 * want);
    }
}

#[test]
fn draws_depend_only_on_seed_and_subject() {
    let p = adult();
    let n = 3000;
    let mut reference = SampledChunk::default();
    p.sample(7, 0, n, &mut reference);
    let bits = |c: &SampledChunk, i: usize| -> Vec<u64> {
        c.covariates
            .iter()
            .chain(&c.etas)
            .chain(&c.parameters)
            .map(|col| col[i].to_bits())
            .collect()
    };
    // Thread counts.
    for threads in [1, 2, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut c = SampledChunk::default();
        pool.install(|| p.sample(7, 0, n, &mut c));
        assert!(c == reference, "{threads} threads");
    }
    // Chunk sizes and shard-like splits, into one chunk reused as a run reuses its buffers
    // (grown, shrunk, and holding other subjects' values before each call).
    let mut c = SampledChunk::default();
    for chunk in [1usize, 1000, 65536, 999] {
        let mut first = 0;
        while first < n {
            let m = chunk.min(n - first);
            p.sample(7, first as u64, m, &mut c);
            for i in 0..m {
                assert_eq!(
                    bits(&c, i),
                    bits(&reference, first + i),
                    "chunk {chunk}, subject {}",
                    first + i
                );
            }
            first += m;
        }
    }
    // A subject alone, and another seed differs.
    let mut alone = SampledChunk::default();
    p.sample(7, 2999, 1, &mut alone);
    assert_eq!(bits(&alone, 0), bits(&reference, 2999));
    p.sample(8, 2999, 1, &mut alone);
    assert_ne!(bits(&alone, 0), bits(&reference, 2999));
}

const GOOD: &str = r#"[population]
name = "t"

[covariates.sex]
levels = { male = 0.5, female = 0.5 }

[covariates.wt]
dist = "normal"
mean = "if(sex == female, 65, 80)"
sd = 10

[parameters]
cl = "2 * (wt / 70)^0.75 * exp(eta_cl)"

[[omega]]
etas = ["eta_cl", "eta_v"]
variance = [0.09, 0.04]
correlation = [[1, 0.3], [0.3, 1]]
"#;

#[test]
fn bad_files_are_located_errors() {
    assert!(Population::parse("ok.toml", GOOD).is_ok());
    for (from, to, line, fragment) in [
        // OMEGA errors at the key that gives the matrix, in the terms it is given in.
        (
            "correlation = [[1, 0.3], [0.3, 1]]",
            "correlation = [[1, 0.99], [-0.99, 1]]",
            18,
            "correlation matrix is not symmetric: entry (2, 1) = -0.99 but (1, 2) = 0.99",
        ),
        ("correlation = [[1, 0.3], [0.3, 1]]", "correlation = [[1, 1.5], [1.5, 1]]", 18, "every entry in [−1, 1]"),
        (
            "variance = [0.09, 0.04]\ncorrelation = [[1, 0.3], [0.3, 1]]",
            "covariance = [[0.09, 0.2], [0.2, 0.04]]",
            17,
            "positive semi-definite",
        ),
        ("variance = [0.09, 0.04]", "covariance = [[0.09, 0.02], [0.02, 0.04]]", 18, "correlation = [[…]] goes with variance"),
        ("variance = [0.09, 0.04]", "cv = [-0.3, 0.2]", 17, "cv -0.3 of 'eta_cl' must be a finite number ≥ 0"),
        ("variance = [0.09, 0.04]", "variance = [inf, 0.04]", 17, "variance inf of 'eta_cl' is not a finite number"),
        ("variance = [0.09, 0.04]", "variance = [0.09, -0.04]", 17, "variance -0.04 of 'eta_v' must be ≥ 0"),
        // One multiplicative residual error.
        (
            "correlation = [[1, 0.3], [0.3, 1]]",
            "correlation = [[1, 0.3], [0.3, 1]]\n\n[residual]\ncp = { exponential = 0.2, proportional = 0.5 }",
            21,
            "give `exponential` or `proportional`, not both",
        ),
        // Covariates, etas, parameters and labels each have a name of their own.
        (
            "[covariates.wt]",
            "[covariates.male]\ndist = \"normal\"\nmean = 0\nsd = 1\n\n[covariates.wt]",
            5,
            "label 'male' of 'sex' has the name of a covariate",
        ),
        ("cl = \"2 * (wt", "female = \"1\"\ncl = \"2 * (wt", 5, "label 'female' of 'sex' has the name of a parameter"),
        ("\"eta_v\"]", "\"male\"]", 5, "label 'male' of 'sex' has the name of an eta"),
        ("cl = \"2 * (wt", "wt = \"1\"\ncl = \"2 * (wt", 13, "parameter 'wt' has the name of a covariate"),
        ("cl = \"2 * (wt", "eta_v = \"1\"\ncl = \"2 * (wt", 13, "parameter 'eta_v' has the name of an eta"),
        ("\"eta_v\"]", "\"wt\"]", 16, "eta 'wt' has the name of a covariate"),
        ("\"eta_v\"]", "\"eta_cl\"]", 16, "eta 'eta_cl' is declared twice"),
        ("cl = \"2 * (wt", "subject_id = \"1\"\ncl = \"2 * (wt", 13, "'subject_id' is the output's subject column"),
        // Numbers that leave a distribution nothing, or are not numbers.
        ("mean = \"if(sex == female, 65, 80)\"", "mean = nan", 9, "mean must be a finite number, got NaN"),
        ("sd = 10", "sd = inf", 10, "sd must be a finite number > 0, got inf"),
        ("cl = \"2 * (wt", "k = nan\ncl = \"2 * (wt", 13, "parameter 'k' must be a finite number, got NaN"),
        ("sd = 10", "sd = 10\nlo = -inf", 11, "lo must be a finite number, got -inf"),
        (
            "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "dist = \"lognormal\"\nmedian = 70\ncv = 0.2\nhi = -1",
            11,
            "hi (-1) leaves a log-normal nothing",
        ),
        (
            "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "dist = \"lognormal\"\nmedian = 70\nmu = 4\nsigma = 0.2",
            10,
            "a log-normal takes median and cv, or mu and sigma, not both (given: median, mu, sigma)",
        ),
        ("male = 0.5, female = 0.5", "male = nan, female = 0.5", 5, "frequency of 'male' must be a finite number ≥ 0, got NaN"),
        ("male = 0.5, female = 0.5", "male = -1, female = 2", 5, "frequency of 'male' must be a finite number ≥ 0, got -1"),
        // Keys that the kind of draw does not take.
        ("sd = 10", "sd = 10\nsigma = 5", 11, "`sigma` does not apply to a normal, which takes `mean`, `sd`, `lo`, `hi`"),
        (
            "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "dist = \"uniform\"\nlo = 50\nhi = 90\nmean = 3",
            11,
            "`mean` does not apply to a uniform, which takes `lo`, `hi`",
        ),
        (
            "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "expr = \"70\"\nlo = 5",
            9,
            "`lo` does not apply to a derived covariate (`expr`), which takes `expr`",
        ),
        ("male = 0.5, female = 0.5 }", "male = 0.5, female = 0.5 }\nhi = 0", 6, "`hi` does not apply to a categorical, which takes `levels`"),
        (
            "mean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "mean = \"if(sex == female, 65, 80) + ht\"\nsd = 10\n\n[covariates.ht]\ndist = \"normal\"\nmean = \"wt\"\nsd = 1",
            7,
            "cycle: wt → ht → wt",
        ),
        ("cl = \"2 * (wt / 70)", "cl = \"2 * (wtt / 70)", 13, "unknown name 'wtt'"),
        ("sd = 10", "sd = -10", 10, "sd must be > 0"),
        ("sd = 10", "sd = 10\nlo = 90\nhi = 40", 12, "covariate 'wt': hi (40) must be above lo (90)"),
        (
            "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10",
            "dist = \"uniform\"\nlo = 50\nhi = 50",
            10,
            "hi (50) must be above lo (50)",
        ),
        ("male = 0.5, female = 0.5", "male = 0.5, female = 0.6", 5, "sum to 1.1"),
        ("name = \"t\"", "name = t\"", 2, ""),
        ("dist = \"normal\"", "dist = \"gaussian\"", 8, "unknown distribution 'gaussian'"),
        // `pi` and `t` are values in every expression, so nothing may take their names.
        (
            "[parameters]",
            "[covariates.pi]\ndist = \"normal\"\nmean = 3\nsd = 1\n\n[parameters]",
            12,
            "expressions read it as the constant π",
        ),
        ("male = 0.5, female", "t = 0.5, female", 5, "label of 'sex': 't' cannot be a name here"),
        // A target's frequencies name the categorical's levels.
        (
            "male = 0.5, female = 0.5 }",
            "male = 0.5, female = 0.5 }\ntarget = { freq = { male = 0.5, Female = 0.5 } }",
            6,
            "covariate 'sex': target `freq` names 'Female', not among its levels (male, female)",
        ),
        ("sd = 10", "sd = 10\ntarget = { freq = { a = 1 } }", 11, "a target's `freq` is for a categorical"),
        // A value that is neither a number nor an expression says what is expected.
        (
            "cl = \"2 * (wt / 70)^0.75 * exp(eta_cl)\"",
            "cl = { typical = 2, omega = 0.3 }",
            13,
            "invalid type: map, expected a number or an expression in quotes, such as 30 or",
        ),
        ("sd = 10", "sd = true", 10, "expected a number or an expression in quotes"),
        ("variance = [0.09, 0.04]", "variance = [0.09, \"a\"]", 17, "expected a number"),
        ("[[omega]]", "[omega]", 15, "[omega] is one table, where a list of them is read: write [[omega]]"),
    ] {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "{from}");
        let err = match Population::parse("pop.toml", &text) {
            Ok(_) => panic!("{to}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("pop.toml:{line}:")) && err.contains(fragment), "{to}: {err}");
    }
}

/// A constant written as a string (an expression that reads no covariate, eta or label) is
/// the same for every subject, so it is checked where it is read, exactly as the number it
/// gives: the same error, at the string's place, where the number's would be.
#[test]
fn constants_written_as_strings_are_checked_as_numbers() {
    let wt = "dist = \"normal\"\nmean = \"if(sex == female, 65, 80)\"\nsd = 10";
    for (from, to, at, fragment) in [
        ("sd = 10", "sd = \"12 - 13\"", "10:6", "sd must be > 0, got -1"),
        ("sd = 10", "sd = '0 * 5'", "10:6", "sd must be > 0, got 0"),
        ("sd = 10", "sd = \"1 / 0\"", "10:6", "sd must be a finite number > 0, got inf"),
        (
            "mean = \"if(sex == female, 65, 80)\"",
            "mean = \"log(-1)\"",
            "9:8",
            "mean must be a finite number, got NaN",
        ),
        (
            "sd = 10",
            "sd = 10\nlo = \"120\"\nhi = 100",
            "12:6",
            "covariate 'wt': hi (100) must be above lo (120)",
        ),
        (
            "sd = 10",
            "sd = 10\nlo = 1\nhi = \"2 - 3\"",
            "12:6",
            "covariate 'wt': hi (-1) must be above lo (1)",
        ),
        (
            wt,
            "dist = \"uniform\"\nlo = \"2 * pi\"\nhi = 5",
            "10:6",
            "hi (5) must be above lo (6.28",
        ),
        (
            wt,
            "dist = \"lognormal\"\nmedian = 70\ncv = \"0.1 - 0.3\"",
            "10:6",
            "cv must be > 0, got -0.19999999999999998",
        ),
        (
            wt,
            "dist = \"lognormal\"\nmedian = \"-70\"\ncv = 0.2",
            "9:10",
            "median must be > 0, got -70",
        ),
        (
            wt,
            "dist = \"lognormal\"\nmu = 4\nsigma = \"-(0.2)\"",
            "10:9",
            "sigma must be > 0, got -0.2",
        ),
        (
            wt,
            "dist = \"lognormal\"\nmedian = 70\ncv = 0.2\nhi = \"-1\"",
            "11:6",
            "hi (-1) leaves a log-normal nothing",
        ),
        (
            wt,
            "dist = \"empirical\"\nby = 1\nx = [0, 1]\nquantiles = [0.1, 0.9]\nvalues = [[1, 2], [3, 4]]\nlo = \"10 * 10\"",
            "13:6",
            "lo (100) leaves nothing of the table",
        ),
        (
            "male = 0.5, female = 0.5",
            "male = \"0.5\", female = \"0.7\"",
            "5:10",
            "the frequencies of 'sex' sum to 1.2, not 1",
        ),
        (
            "male = 0.5, female = 0.5",
            "male = 0.5, female = \"0.2 + 0.1\"",
            "5:10",
            "the frequencies of 'sex' sum to 0.8, not 1",
        ),
        (
            "male = 0.5, female = 0.5",
            "male = \"-0.5\", female = 1.5",
            "5:19",
            "frequency of 'male' must be a finite number ≥ 0, got -0.5",
        ),
    ] {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "{from}");
        let err = match Population::parse("pop.toml", &text) {
            Ok(_) => panic!("{to}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("pop.toml:{at}: ")) && err.contains(fragment),
            "{to}: {err}"
        );
    }
    // Valid constants written as strings draw exactly what the numbers draw.
    let as_strings = GOOD
        .replace(
            "male = 0.5, female = 0.5",
            "male = \"1 / 2\", female = \"0.5\"",
        )
        .replace("sd = 10", "sd = \"5 * 2\"\nlo = \"40\"\nhi = '2 * 60'");
    let as_numbers = GOOD.replace("sd = 10", "sd = 10\nlo = 40\nhi = 120");
    let (p, q) = (
        Population::parse("s.toml", &as_strings).unwrap(),
        Population::parse("n.toml", &as_numbers).unwrap(),
    );
    let (mut c, mut d) = (SampledChunk::default(), SampledChunk::default());
    p.sample(3, 0, 2000, &mut c);
    q.sample(3, 0, 2000, &mut d);
    for name in ["sex", "wt"] {
        let (a, b) = (col(&p, &c, name), col(&q, &d, name));
        assert!(a.iter().all(|v| v.is_finite()), "{name}");
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}"
        );
    }
}

#[test]
fn normal_quantile_function_inverts_the_cdf() {
    for p in [1e-300, 1e-12, 0.001, 0.3, 0.5, 0.77, 0.999999] {
        let x = norm_ppf(p);
        assert!(
            (norm_cdf(x) - p).abs() <= 1e-13 * p.max(1e-300) + 1e-16,
            "{p}"
        );
    }
}

#[test]
fn renal_population_reproduces_ckd_epi_and_its_classes() {
    let p = Population::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("populations/renal_impairment.toml"),
    )
    .unwrap();
    let mut c = SampledChunk::default();
    p.sample(3, 0, 200_000, &mut c);
    let (renal, egfr, scr, age, sex) = (
        col(&p, &c, "renal"),
        col(&p, &c, "egfr"),
        col(&p, &c, "scr"),
        col(&p, &c, "age"),
        col(&p, &c, "sex"),
    );
    let bounds = [(90.0, 120.0), (60.0, 90.0), (30.0, 60.0), (15.0, 30.0)];
    let mut counts = [0usize; 4];
    for i in 0..egfr.len() {
        let k = renal[i] as usize;
        counts[k] += 1;
        assert!(
            egfr[i] >= bounds[k].0 && egfr[i] <= bounds[k].1,
            "eGFR {} in class {k}",
            egfr[i]
        );
        // The forward CKD-EPI 2021 equation on the sampled creatinine gives back the eGFR.
        let female = sex[i] == 1.0;
        let (kappa, alpha) = if female { (0.7, -0.241) } else { (0.9, -0.302) };
        let r = scr[i] / kappa;
        let e = 142.0
            * r.min(1.0).powf(alpha)
            * r.max(1.0).powf(-1.2)
            * 0.9938f64.powf(age[i])
            * if female { 1.012 } else { 1.0 };
        assert!(
            (e - egfr[i]).abs() < 1e-9 * egfr[i],
            "CKD-EPI of scr {} gives {e}, sampled {}",
            scr[i],
            egfr[i]
        );
    }
    for c in counts {
        let f = c as f64 / egfr.len() as f64;
        assert!(
            (f - 0.25).abs() < 3.0 * (0.25 * 0.75 / egfr.len() as f64).sqrt(),
            "class frequency {f}"
        );
    }
}

#[test]
fn phenotype_frequencies_follow_ancestry() {
    let p = Population::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("populations/cyp_phenotypes.toml"),
    )
    .unwrap();
    let n = 400_000;
    let mut c = SampledChunk::default();
    p.sample(5, 0, n, &mut c);
    let (anc, ph) = (col(&p, &c, "ancestry"), col(&p, &c, "cyp2c19"));
    // Table frequencies (pm, im, nm, rm, um) by ancestry code.
    let want = [
        [0.023, 0.248, 0.406, 0.276, 0.047],
        [0.223, 0.440, 0.321, 0.016, 0.0],
    ];
    for (a, freqs) in want.iter().enumerate() {
        let idx: Vec<usize> = (0..n).filter(|i| anc[*i] == a as f64).collect();
        for (k, w) in freqs.iter().enumerate() {
            let f = idx.iter().filter(|i| ph[**i] == k as f64).count() as f64 / idx.len() as f64;
            let se = (w * (1.0 - w) / idx.len() as f64).sqrt().max(1e-12);
            assert!(
                (f - w).abs() <= 3.0 * se,
                "ancestry {a}, phenotype {k}: {f} vs {w}"
            );
        }
    }
}

/// Pearson correlation.
fn corr(a: &[f64], b: &[f64]) -> f64 {
    let (ma, sa) = mean_sd(a);
    let (mb, sb) = mean_sd(b);
    let n = a.len() as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / ((n - 1.0) * sa * sb)
}

#[test]
fn inter_occasion_etas_are_drawn_per_occasion() {
    let text = r#"
[population]
name = "iov"

[covariates.wt]
dist = "lognormal"
median = 70
cv = 0.2

[parameters]
cl = "5 * (wt / 70)^0.75 * exp(eta_cl + iov_cl)"
v = "30 * exp(eta_v)"
ka = "1.2 * exp(iov_ka)"

[[omega]]
etas = ["eta_cl", "eta_v"]
cv = [0.3, 0.2]

[[omega]]
etas = ["iov_cl", "iov_ka"]
variance = [0.01, 0.04]
correlation = [[1, 0.5], [0.5, 1]]
occasion = true
"#;
    let p = Population::parse("iov.toml", text).unwrap();
    assert_eq!(p.iov_eta_indices(), vec![2, 3]);
    assert_eq!(p.parameter_varies_by_occasion(), &[true, false, true]);
    let n = 400_000;
    let mut c = SampledChunk::default();
    p.sample_occasions(5, 0, n, 3, &mut c);
    assert_eq!(c.occasions.len(), 2);
    let se_corr = 1.0 / (n as f64).sqrt();
    let occ = |k: usize, j: usize| -> &[f64] {
        if k == 0 {
            &c.etas[2 + j]
        } else {
            &c.occasions[k - 1].etas[j]
        }
    };
    for k in 0..3 {
        // Variances of OMEGA's IOV block, and its correlation, at every occasion.
        let (m_cl, sd_cl) = mean_sd(occ(k, 0));
        let (m_ka, sd_ka) = mean_sd(occ(k, 1));
        assert!(
            m_cl.abs() < 3.0 * 0.1 / (n as f64).sqrt(),
            "occasion {k}: mean {m_cl}"
        );
        assert!(
            m_ka.abs() < 3.0 * 0.2 / (n as f64).sqrt(),
            "occasion {k}: mean {m_ka}"
        );
        assert!(
            (sd_cl / 0.1 - 1.0).abs() < 0.005,
            "occasion {k}: sd {sd_cl}"
        );
        assert!(
            (sd_ka / 0.2 - 1.0).abs() < 0.005,
            "occasion {k}: sd {sd_ka}"
        );
        let r = corr(occ(k, 0), occ(k, 1));
        assert!((r - 0.5).abs() < 0.01, "occasion {k}: correlation {r}");
        // Independent of the subject's IIV etas and of the other occasions.
        assert!(corr(occ(k, 0), &c.etas[0]).abs() < 4.0 * se_corr);
        for l in 0..k {
            let r = corr(occ(k, 0), occ(l, 0));
            assert!(r.abs() < 4.0 * se_corr, "occasions {l} and {k}: {r}");
        }
    }
    // Parameters at each occasion use that occasion's etas and the subject's own.
    let (wt, eta_cl) = (&c.covariates[0], &c.etas[0]);
    for k in 0..3 {
        let cl = if k == 0 {
            &c.parameters[0]
        } else {
            &c.occasions[k - 1].parameters[0]
        };
        let v = if k == 0 {
            &c.parameters[1]
        } else {
            &c.occasions[k - 1].parameters[1]
        };
        for i in (0..n).step_by(9973) {
            let want = 5.0 * (wt[i] / 70.0).powf(0.75) * (eta_cl[i] + occ(k, 0)[i]).exp();
            assert!((cl[i] / want - 1.0).abs() < 1e-14);
            assert_eq!(v[i], c.parameters[1][i], "v does not vary by occasion");
        }
    }
    // Occasion k does not depend on how many occasions are sampled, nor on the chunking;
    // the first occasion is what `sample` gives.
    let mut one = SampledChunk::default();
    p.sample(5, 1000, 10, &mut one);
    let mut two = SampledChunk::default();
    p.sample_occasions(5, 1000, 10, 2, &mut two);
    assert_eq!(one.etas, two.etas);
    assert_eq!(one.parameters, two.parameters);
    assert_eq!(
        two.occasions[0].etas[0][..],
        c.occasions[0].etas[0][1000..1010]
    );
    // The same into the chunk that held the 400 000 subjects' three occasions.
    p.sample_occasions(5, 1000, 10, 2, &mut c);
    assert!(c == two, "a reused chunk");
    // A subject-level population is unchanged by the occasion machinery.
    assert!(adult().iov_eta_indices().is_empty());

    let bad = text.replace("occasion = true", "occasion = \"yes\"");
    let err = Population::parse("iov.toml", &bad).unwrap_err().to_string();
    assert!(err.starts_with("iov.toml:"), "{err}");
}

/// A fraction with logit-normal variability, as NONMEM models write bioavailability:
/// `expit(logit(0.7) + eta)` is the subject's eta through the logistic function, evaluated by the
/// population's compiled expressions, and its logit is normal with the typical value's logit as
/// mean.
#[test]
fn logit_normal_parameters_use_expit_and_logit() {
    let text = r#"
[population]
name = "f"

[parameters]
f = "expit(logit(0.7) + eta_f)"
theta = "2 * pi * expit(eta_f)"

[[omega]]
etas = ["eta_f"]
variance = [0.25]
"#;
    let p = Population::parse("f.toml", text).unwrap();
    let n = 100_000;
    let mut c = SampledChunk::default();
    p.sample(11, 0, n, &mut c);
    let (f, theta, eta) = (col(&p, &c, "f"), col(&p, &c, "theta"), col(&p, &c, "eta_f"));
    let logit = |x: f64| (x / (1.0 - x)).ln();
    for i in 0..n {
        let expected = 1.0 / (1.0 + (-(logit(0.7) + eta[i])).exp());
        assert!(
            (f[i] - expected).abs() <= 2e-16,
            "{} against {expected}",
            f[i]
        );
        assert!(f[i] > 0.0 && f[i] < 1.0);
        let expected = 2.0 * std::f64::consts::PI / (1.0 + (-eta[i]).exp());
        assert!((theta[i] - expected).abs() <= 1e-15 * expected);
    }
    let z: Vec<f64> = f.iter().map(|&x| logit(x)).collect();
    let (m, sd) = mean_sd(&z);
    assert!(
        (m - logit(0.7)).abs() < 3.0 * 0.5 / (n as f64).sqrt(),
        "mean of logit(f) {m}"
    );
    assert!((sd - 0.5).abs() < 0.005, "sd of logit(f) {sd}");
}

/// `phi`, `floor` and the other functions in population expressions: Φ of a standard normal
/// eta is uniform on (0, 1) (the probability integral transform), so `floor(10 * Φ)` puts a
/// tenth of the subjects in each decile; `tanh`, `atan`, `erf`, `erfc` and `ceil` equal Rust's
/// and the `libm` crate's functions of each subject's eta.
#[test]
fn phi_of_a_normal_eta_is_uniform_and_floor_bins_it() {
    let text = r#"
[population]
name = "u"

[parameters]
u = "phi(eta_z / 2)"
decile = "floor(10 * phi(eta_z / 2))"
mix = "tanh(eta_z) + atan(eta_z) + erf(eta_z) + erfc(eta_z) + ceil(eta_z)"

[[omega]]
etas = ["eta_z"]
variance = [4.0]
"#;
    let p = Population::parse("u.toml", text).unwrap();
    let n = 100_000;
    let mut c = SampledChunk::default();
    p.sample(5, 0, n, &mut c);
    let (u, decile, mix, eta) = (
        col(&p, &c, "u"),
        col(&p, &c, "decile"),
        col(&p, &c, "mix"),
        col(&p, &c, "eta_z"),
    );
    let mut counts = [0usize; 10];
    for i in 0..n {
        let z = eta[i];
        let want = 0.5 * libm::erfc(z / 2.0 * -std::f64::consts::FRAC_1_SQRT_2);
        assert!((u[i] - want).abs() <= 2.0 * f64::EPSILON * want, "{}", u[i]);
        assert_eq!(decile[i], (10.0 * u[i]).floor());
        let want = z.tanh() + z.atan() + libm::erf(z) + libm::erfc(z) + z.ceil();
        assert!(
            (mix[i] - want).abs() <= 1e-15 * want.abs().max(1.0),
            "{}",
            mix[i]
        );
        counts[decile[i] as usize] += 1;
    }
    let (m, sd) = mean_sd(u);
    assert!(
        (m - 0.5).abs() < 4.0 * 0.2887 / (n as f64).sqrt(),
        "mean {m}"
    );
    assert!((sd - 1.0 / 12f64.sqrt()).abs() < 0.003, "sd {sd}");
    // Binomial(n, 0.1): SD 95 subjects per decile.
    for (k, &c) in counts.iter().enumerate() {
        assert!(c.abs_diff(n / 10) < 400, "decile {k}: {c}");
    }
}

#[test]
fn empirical_tables_truncate_at_their_bounds() {
    // Quantile function of uniform(0, 10) at every x; lo/hi truncate it to uniform(2, 5).
    let text = r#"
[population]
name = "emp"

[covariates.age]
dist = "uniform"
lo = 0
hi = 1

[covariates.x]
dist = "empirical"
by = "age"
x = [0, 1]
quantiles = [0, 0.5, 1]
values = [[0, 5, 10], [0, 5, 10]]
lo = 2
hi = 5
"#;
    let p = Population::parse("emp.toml", text).unwrap();
    let n = 200_000;
    let mut c = SampledChunk::default();
    p.sample(3, 0, n, &mut c);
    let x = col(&p, &c, "x");
    assert!(x.iter().all(|v| (2.0..=5.0).contains(v)));
    let (m, sd) = mean_sd(x);
    // Uniform(2, 5): mean 3.5, sd 3/√12; nothing piled up at the bounds.
    assert!(
        (m - 3.5).abs() < 3.0 * (3.0 / 12f64.sqrt()) / (n as f64).sqrt(),
        "mean {m}"
    );
    assert!((sd - 3.0 / 12f64.sqrt()).abs() < 0.005, "sd {sd}");
    let at_bounds = x.iter().filter(|v| **v == 2.0 || **v == 5.0).count();
    assert!(at_bounds < 5, "{at_bounds} draws at the bounds");
}

/// Bounds on an empirical table keep its point masses: a draw below the first quantile level
/// takes the first value, above the last the last (10 % each here), and a flat stretch of tied
/// values holds its levels' share. Bounds that exclude nothing draw exactly what no bounds
/// draw; a binding bound keeps, renormalised, the masses of the values it keeps (frequencies
/// within 6 standard errors).
#[test]
fn empirical_bounds_keep_the_point_masses_of_tails_and_ties() {
    let table = |name: &str, levels: &str, row: &str, bounds: &str| {
        format!(
            "[covariates.{name}]\ndist = \"empirical\"\nby = \"age\"\nx = [0, 1]\n\
             quantiles = {levels}\nvalues = [{row}, {row}]\n{bounds}\n"
        )
    };
    let (q, v) = ("[0.1, 0.5, 0.9]", "[10, 20, 30]");
    let (qt, vt) = ("[0.1, 0.4, 0.6, 0.9]", "[10, 20, 20, 30]");
    let head =
        "[population]\nname = \"emp\"\n[covariates.age]\ndist = \"uniform\"\nlo = 0\nhi = 1\n";
    let free = format!("{head}{}", table("x", q, v, ""));
    let n = 200_000;
    let draw = |text: &str, name: &str| -> Vec<f64> {
        let p = Population::parse("emp.toml", text).unwrap();
        let mut c = SampledChunk::default();
        p.sample(1, 0, n, &mut c);
        col(&p, &c, name).to_vec()
    };
    let free_x = draw(&free, "x");
    for bounds in ["lo = 0\nhi = 1000", "lo = 10\nhi = 30", "lo = -1e300"] {
        let text = format!("{head}{}", table("x", q, v, bounds));
        assert_eq!(draw(&text, "x"), free_x, "{bounds}");
    }
    let share = |x: &[f64], value: f64| x.iter().filter(|v| **v == value).count() as f64 / n as f64;
    let close = |what: &str, got: f64, want: f64| {
        let se = (want * (1.0 - want) / n as f64).sqrt();
        assert!((got - want).abs() < 6.0 * se, "{what}: {got} vs {want}");
    };
    close("P(x = 10)", share(&free_x, 10.0), 0.1);
    close("P(x = 30)", share(&free_x, 30.0), 0.1);
    let text = format!(
        "{head}{}{}{}",
        table("lo25", q, v, "lo = 25"),
        table("hi20", qt, vt, "hi = 20"),
        table("lo20", qt, vt, "lo = 20")
    );
    let (lo25, hi20, lo20) = (
        draw(&text, "lo25"),
        draw(&text, "hi20"),
        draw(&text, "lo20"),
    );
    assert!(lo25.iter().all(|x| (25.0..=30.0).contains(x)));
    close("P(lo25 = 30)", share(&lo25, 30.0), 0.1 / 0.3);
    assert!(hi20.iter().all(|x| (10.0..=20.0).contains(x)));
    close("P(hi20 = 20)", share(&hi20, 20.0), 0.2 / 0.6);
    close("P(hi20 = 10)", share(&hi20, 10.0), 0.1 / 0.6);
    assert!(lo20.iter().all(|x| (20.0..=30.0).contains(x)));
    close("P(lo20 = 20)", share(&lo20, 20.0), 0.2 / 0.6);
    close("P(lo20 = 30)", share(&lo20, 30.0), 0.1 / 0.6);
}

/// `vpop sample POP` without a file prints the summary; a covariate whose bounds, given by
/// expressions, leave some subjects no interval is NaN for them, and the summary says how many
/// and leaves them out of the statistics.
#[test]
fn the_sample_summary_counts_subjects_without_a_value() {
    let dir = std::env::temp_dir().join(format!("vpop-sample-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pop.toml");
    let text = GOOD.replace(
        "sd = 10",
        "sd = 10\nlo = \"if(sex == female, 90, 20)\"\nhi = 85",
    );
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("sample")
        .arg(&file)
        .args(["-n", "2000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let females = text
        .lines()
        .find_map(|l| l.strip_prefix("sex=female"))
        .and_then(|l| l.split_whitespace().next())
        .map(|f| (f.parse::<f64>().unwrap() * 2000.0).round() as u64)
        .unwrap_or_else(|| panic!("{text}"));
    assert!((900..1100).contains(&females), "{text}");
    for column in ["wt", "cl"] {
        let note = format!("note: {column}: {females} of 2000 subjects are NaN or infinite");
        assert!(text.contains(&note), "{note}\n{text}");
    }
    let wt = text.lines().find(|l| l.starts_with("wt ")).unwrap();
    let mean: f64 = wt.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The males' weights alone: normal(80, 10) truncated to [20, 85], whose mean is
    // 80 − 10·φ(0.5)/(Φ(0.5) − Φ(−6)) = 74.91.
    assert!((mean - 74.91).abs() < 1.0, "{wt}");
}

/// `vpop sample -o FILE --summary`: the file holds the subjects the library samples, and the
/// summary's mean, SD and type-7 5th, 50th and 95th percentiles of every numeric column are
/// those of the file's column (60 000 subjects: one sampling pass, the percentiles from the
/// values kept near their positions).
#[test]
fn the_sample_command_writes_the_subjects_and_summarises_them() {
    use arrow_array::{Array, Float64Array};
    let dir = std::env::temp_dir().join(format!("vpop-sample-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("subjects.parquet");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = 60_000;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("sample")
        .arg(root.join("populations/adult_healthy.toml"))
        .args(["-n", &n.to_string(), "--seed", "3", "--summary", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let column = |name: &str| -> Vec<f64> {
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name(name).unwrap();
                let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
                (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
            })
            .collect()
    };
    let p = adult();
    let mut lib = SampledChunk::default();
    p.sample(3, 0, n, &mut lib);
    let type7 = |sorted: &[f64], q: f64| {
        let h = (sorted.len() - 1) as f64 * q;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
    };
    let mut checked = 0;
    for name in ["age", "wt", "crcl", "eta_cl", "cl", "v2"] {
        let xs = column(name);
        let want_bits: Vec<u64> = col(&p, &lib, name).iter().map(|x| x.to_bits()).collect();
        assert!(
            xs.iter().map(|x| x.to_bits()).eq(want_bits),
            "{name}: the file differs from the library's subjects"
        );
        let (mut s, mut s2) = (0.0, 0.0);
        for x in &xs {
            s += x;
            s2 += x * x;
        }
        let m = xs.len() as f64;
        let mean = s / m;
        let sd = ((s2 / m - mean * mean) * m / (m - 1.0)).max(0.0).sqrt();
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        let want: Vec<String> = [mean, sd, type7(&sorted, 0.05), type7(&sorted, 0.5)]
            .iter()
            .chain(&[type7(&sorted, 0.95)])
            .map(|v| vpop::output::table_value(*v, 4))
            .collect();
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no summary line for {name}:\n{text}"));
        let got: Vec<&str> = line.split_whitespace().skip(1).take(5).collect();
        assert_eq!(got, want, "{name}: {line}");
        checked += 1;
    }
    assert_eq!(checked, 6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A built-in population is sampled by name from any directory, exactly as its shipped file;
/// an unknown name lists the built-in ones.
#[test]
fn built_in_populations_are_sampled_by_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let elsewhere = std::env::temp_dir();
    let sample = |what: &std::ffi::OsStr| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .current_dir(&elsewhere)
            .arg("sample")
            .arg(what)
            .args(["-n", "3000", "--seed", "5", "--summary"])
            .output()
            .unwrap()
    };
    for p in vpop::population::library::POPULATIONS {
        let by_name = sample(p.name.as_ref());
        let by_file = sample(
            root.join(format!("populations/{}.toml", p.name))
                .as_os_str(),
        );
        assert!(
            by_name.status.success(),
            "{}",
            String::from_utf8_lossy(&by_name.stderr)
        );
        assert!(by_file.status.success());
        assert_eq!(by_name.stdout, by_file.stdout, "{}", p.name);
        assert!(String::from_utf8_lossy(&by_name.stdout).contains("3000 subjects"));
    }
    let bad = sample("adult_healty".as_ref());
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("built-in populations: adult_healthy, "),
        "{err}"
    );
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("populations")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for p in vpop::population::library::POPULATIONS {
        assert!(list.contains(p.name), "{list}");
    }
}

/// Arguments given by expressions that leave a subject no distribution make that subject's
/// covariate NaN, and nothing else: a uniform whose hi ≤ lo (not the interval swapped), a
/// categorical whose frequencies are negative or do not sum to 1 (not clamped and
/// renormalised), an empirical table whose bounds miss the subject's values or cross (not the
/// bound itself, nor a panic). Every other subject and covariate draws, bit for bit, what a
/// population with valid arguments draws where they agree.
/// Spreads at the ends of the floats are drawn, not lost: a log-normal CV and an OMEGA CV of
/// 1e-9 (whose 1 + CV² is 1 in f64) keep their spread, given as a number or as an expression
/// of another covariate (evaluated per subject, not folded to a number), and
/// one of 1e-170 (whose square is 0) gives the median, not NaN; a
/// uniform between ±1.7e308 (wider than the largest float) stays finite and uniform.
#[test]
fn spreads_at_the_ends_of_the_floats_are_drawn() {
    let text = r#"
[covariates.one]
dist = "uniform"
lo = 0.9999999
hi = 1.0000001

[covariates.a]
dist = "lognormal"
median = 70
cv = 1e-9

[covariates.b]
dist = "lognormal"
median = 70
cv = "1e-9 * one"

[covariates.c]
dist = "lognormal"
median = 70
cv = "0.3 * one"

[covariates.d]
dist = "lognormal"
median = 70
cv = 1e-170

[covariates.e]
dist = "lognormal"
median = 70
cv = "1e-170 * one"

[covariates.f]
dist = "lognormal"
median = 70
cv = "0.005 * one"

[covariates.w]
dist = "uniform"
lo = -1.7e308
hi = 1.7e308

[parameters]
cl = "exp(eta_cl)"

[[omega]]
etas = ["eta_cl"]
cv = [1e-9]
"#;
    let p = Population::parse("ends.toml", text).unwrap();
    let n = 40_000;
    let mut c = SampledChunk::default();
    p.sample(3, 0, n, &mut c);
    // The sample SD of ln(x) estimates sigma to 1/sqrt(2n) = 0.35 %.
    let log_sd = |x: &[f64]| {
        assert!(x.iter().all(|v| v.is_finite() && *v > 0.0));
        mean_sd(&x.iter().map(|v| v.ln()).collect::<Vec<_>>()).1
    };
    for name in ["a", "b"] {
        let sd = log_sd(col(&p, &c, name));
        assert!((sd / 1e-9 - 1.0).abs() < 0.02, "{name}: {sd:e}");
    }
    let sd = log_sd(col(&p, &c, "c"));
    let sigma = (1.0f64 + 0.09).ln().sqrt();
    assert!((sd / sigma - 1.0).abs() < 0.02, "c: {sd} against {sigma}");
    // A CV whose square is below the smallest float: a spread of 1e-170 on 70 is below the
    // floats' resolution, so every value is the median (through exp(ln 70)), not NaN.
    for name in ["d", "e"] {
        let x = col(&p, &c, name);
        let median = 70f64.ln().exp();
        assert!(x.iter().all(|v| *v == median), "{name}: {:?}", &x[..3]);
    }
    let sd = log_sd(col(&p, &c, "f"));
    let sigma = (1.0f64 + 0.005 * 0.005).ln().sqrt();
    assert!((sd / sigma - 1.0).abs() < 0.02, "f: {sd} against {sigma}");
    let eta = mean_sd(col(&p, &c, "eta_cl")).1;
    assert!((eta / 1e-9 - 1.0).abs() < 0.02, "eta_cl: {eta:e}");
    // Uniform: the fraction below each of a few points of the range, within 4 SE.
    let w = col(&p, &c, "w");
    assert!(w.iter().all(|v| v.is_finite() && v.abs() <= 1.7e308));
    for q in [0.1, 0.5, 0.9] {
        let x = -1.7e308 * (1.0 - q) + 1.7e308 * q;
        let below = w.iter().filter(|v| **v < x).count() as f64 / n as f64;
        let se = (q * (1.0 - q) / n as f64).sqrt();
        assert!((below - q).abs() < 4.0 * se, "{q}: {below}");
    }
}

#[test]
fn per_subject_arguments_without_a_distribution_give_nan() {
    let text = r#"
[population]
name = "nan"

[covariates.anc]
levels = { eu = 0.5, jp = 0.5 }

[covariates.u]
dist = "uniform"
lo = 0
hi = 1

[covariates.y]
dist = "uniform"
lo = "u"
hi = "0.5"

[covariates.g]
levels = { a = "if(anc == eu, 0.2, 0.3)", b = "if(anc == eu, 0.9, 0.7)" }

[covariates.h]
levels = { a = "if(anc == eu, -0.2, 0.3)", b = "if(anc == eu, 1.2, 0.7)" }

[covariates.e]
dist = "empirical"
by = "u"
x = [0, 1]
quantiles = [0.1, 0.9]
values = [[0, 1], [2, 3]]
lo = "if(u < 0.25, 100, if(u < 0.5, 0.5 + u, 2))"
hi = "if(u < 0.5, 200, 1)"

[covariates.after]
dist = "normal"
mean = 0
sd = 1
"#;
    // The same population where every argument is valid for every subject.
    let valid = text
        .replace("hi = \"0.5\"", "hi = \"u + 0.5\"")
        .replace("0.9, 0.7", "0.8, 0.7")
        .replace("-0.2, 0.3", "0.2, 0.3")
        .replace("1.2, 0.7", "0.8, 0.7")
        .replace("if(u < 0.25, 100, if(u < 0.5, 0.5 + u, 2))", "0.5 + u")
        .replace("if(u < 0.5, 200, 1)", "200");
    let p = Population::parse("nan.toml", text).unwrap();
    let q = Population::parse("valid.toml", &valid).unwrap();
    let n = 20_000;
    let (mut c, mut d) = (SampledChunk::default(), SampledChunk::default());
    p.sample(5, 0, n, &mut c);
    q.sample(5, 0, n, &mut d);
    let (anc, u) = (col(&p, &c, "anc"), col(&p, &c, "u"));
    let (y, g, h, e) = (
        col(&p, &c, "y"),
        col(&p, &c, "g"),
        col(&p, &c, "h"),
        col(&p, &c, "e"),
    );
    let mut jp_a = 0;
    for i in 0..n {
        let eu = anc[i] == 0.0;
        assert_eq!(y[i].is_nan(), u[i] >= 0.5, "y {} at u {}", y[i], u[i]);
        if !y[i].is_nan() {
            assert!(y[i] >= u[i] && y[i] <= 0.5, "y {} at u {}", y[i], u[i]);
        }
        // g sums to 1.1 and h has a negative frequency for eu: no category.
        assert_eq!(g[i].is_nan(), eu);
        assert_eq!(h[i].is_nan(), eu);
        jp_a += (!eu && g[i] == 0.0) as usize;
        // e: lo above the table (u < 0.25) or lo ≥ hi (u ≥ 0.5, where 2 > 1).
        assert_eq!(
            e[i].is_nan(),
            u[i] < 0.25 || u[i] >= 0.5,
            "e {} at u {}",
            e[i],
            u[i]
        );
        // Where its arguments are the same and valid, each covariate is what the valid
        // population draws; the covariate after them is the same for every subject.
        for name in ["u", "g", "h", "e", "after"] {
            let (a, b) = (col(&p, &c, name)[i], col(&q, &d, name)[i]);
            if name == "after" || !a.is_nan() {
                assert_eq!(a.to_bits(), b.to_bits(), "{name} of subject {i}");
            }
        }
    }
    // The valid frequencies still hold: P(a | jp) = 0.3.
    let jp = anc.iter().filter(|a| **a == 1.0).count() as f64;
    let share = jp_a as f64 / jp;
    assert!((share - 0.3).abs() < 3.0 * (0.21 / jp).sqrt(), "{share}");
}

/// `vpop sample -o`: a subject without a category is null in the categorical's column (not the
/// first label), and the summary counts such subjects apart from the frequencies.
#[test]
fn a_subject_without_a_category_is_null_in_the_file() {
    use arrow_array::Array;
    let dir = std::env::temp_dir().join(format!("vpop-sample-null-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pop, file) = (dir.join("pop.toml"), dir.join("out.parquet"));
    std::fs::write(
        &pop,
        "[population]\nname = \"c\"\n[covariates.anc]\nlevels = { eu = 0.5, jp = 0.5 }\n\
         [covariates.g]\nlevels = { a = \"if(anc == eu, 0.2, 0.3)\", b = \"if(anc == eu, 0.9, 0.7)\" }\n",
    )
    .unwrap();
    let n = 2000;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("sample")
        .arg(&pop)
        .args(["-n", &n.to_string(), "--summary", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let (mut nulls, mut eu) = (0, 0);
    for b in reader {
        let b = b.unwrap();
        nulls += b.column_by_name("g").unwrap().null_count();
        let anc = b.column_by_name("anc").unwrap();
        let anc = anc
            .as_any()
            .downcast_ref::<arrow_array::DictionaryArray<arrow_array::types::UInt16Type>>()
            .unwrap();
        let labels = anc
            .values()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        eu += anc
            .keys()
            .iter()
            .filter(|k| k.map(|k| labels.value(k as usize)) == Some("eu"))
            .count();
    }
    assert_eq!(nulls, eu);
    let note = format!("note: g: {eu} of {n} subjects have no category");
    assert!(text.contains(&note), "{note}\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example file at the top of docs/populations.md is complete: it parses, every subject
/// gets a finite creatinine clearance, and its age target (the truncated normal's mean and SD,
/// rounded) is the closed form's.
#[test]
fn the_documented_example_population_is_complete() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/populations.md"))
            .unwrap();
    let start = doc.find("```toml\n[population]").unwrap() + "```toml\n".len();
    let text = &doc[start..start + doc[start..].find("```").unwrap()];
    let p = Population::parse("populations.md", text).unwrap_or_else(|e| panic!("{e}"));
    let age = p
        .covariate_names()
        .iter()
        .position(|n| *n == "age")
        .unwrap();
    let t = p.covariate_target(age).unwrap();
    let (mean, var) = truncated_normal_moments(40.0, 12.0, 18.0, 80.0);
    assert!((t.mean.unwrap() - mean).abs() < 0.005, "{t:?} vs {mean}");
    assert!(
        (t.sd.unwrap() - var.sqrt()).abs() < 0.005,
        "{t:?} vs {}",
        var.sqrt()
    );
    let mut c = SampledChunk::default();
    p.sample(1, 0, 1000, &mut c);
    assert!(col(&p, &c, "crcl")
        .iter()
        .all(|x| x.is_finite() && *x > 0.0));
}

/// The error of a population whose `[parameters]` table (from line 13) is `params`, with the
/// categorical `sex` (its `levels` on line 5), `wt`, and etas `eta_cl`, `eta_v`.
fn located(params: &str, levels: &str) -> String {
    let text = format!(
        "[population]\nname = \"loc\"\n\n[covariates.sex]\nlevels = {levels}\n\n\
         [covariates.wt]\ndist = \"normal\"\nmean = 70\nsd = 10\n\n[parameters]\n{params}\n\n\
         [[omega]]\netas = [\"eta_cl\", \"eta_v\"]\nvariance = [0.1, 0.1]\n"
    );
    match Population::parse("pop.toml", &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// An error inside an expression written as any form of TOML string is located at the
/// character of the file it is about: escapes, literal strings, the newline after a multi-line
/// string's opening delimiter and line-ending backslashes all taken into account.
#[test]
fn errors_inside_every_form_of_toml_string_are_located_in_the_file() {
    const LEVELS: &str = "{ male = 0.5, female = 0.5 }";
    for (params, want) in [
        // Basic strings (line 13 is the first parameter's), with escapes before the name.
        (
            "v = \"20 * (wt/70) \\t* exp(eta_v) * vv\"",
            "pop.toml:13:36: unknown name 'vv'",
        ),
        (
            "v = \"20 * (wt/70)\\u0020* exp(eta_v) * vv\"",
            "pop.toml:13:39: unknown name 'vv'",
        ),
        (
            "v = \"20 * if(wt > 70, 1, 2) * \\\"vv\\\"\"",
            "pop.toml:13:31: unexpected character '\\\"'",
        ),
        (
            "v = \"20 * if(\\u0077t > 70, 1, 2) * vv\"",
            "pop.toml:13:36: unknown name 'vv'",
        ),
        // An escape decoding to a character the language refuses: located at its backslash.
        (
            "v = \"20 * (wt/70) * \\u00e9\"",
            "pop.toml:13:21: unexpected character 'é'",
        ),
        // Literal strings (a backslash is itself there).
        (
            "v = '20 * (wt/70) * exp(eta_v) * vv'",
            "pop.toml:13:34: unknown name 'vv'",
        ),
        (
            "cl = 1\nv = '20 * (wt/70) * exp(eta_v) \\ vv'",
            "pop.toml:14:32: unexpected character '\\\\'",
        ),
        // Multi-line basic strings: the first newline is trimmed; a line-ending backslash
        // joins lines.
        (
            "cl = \"\"\"\n  3 * (wt / 70)^0.75\n    * exp(eta_cll)\"\"\"",
            "pop.toml:15:11: unknown name 'eta_cll'",
        ),
        (
            "cl = \"\"\"\n  3 * (wt / 70)^0.75 \\\n   \n    * exp(eta_cl) * \\t vv\"\"\"",
            "pop.toml:16:24: unknown name 'vv'",
        ),
        (
            "cl = \"\"\"3 * (wt / 70)^0.75 \\\n    * exp(eta_cl) * (\"\"\"",
            "pop.toml:14:22: expected a value, found end of input",
        ),
        (
            "cl = \"\"\"\n  3 * (wt / 70)^0.75\n    * exp(eta_cl) + )\"\"\"",
            "pop.toml:15:21: expected a value, found ')'",
        ),
        // Multi-line literal strings.
        (
            "v = '''\n20 * (wt/70)\n  * exp(eta_v) * vv'''",
            "pop.toml:15:18: unknown name 'vv'",
        ),
        (
            "v = '''20 * (wt/70) * exp(eta_v) * vv'''",
            "pop.toml:13:36: unknown name 'vv'",
        ),
        // Windows line endings.
        (
            "cl = \"\"\"\r\n  3 * (wt / 70)^0.75\r\n    * exp(eta_cll)\"\"\"",
            "pop.toml:15:11: unknown name 'eta_cll'",
        ),
    ] {
        let err = located(params, LEVELS);
        assert!(err.contains(want), "{params}\nwant {want}\ngot  {err}");
    }
    // A categorical's frequencies, given by expressions in any form of string.
    for (levels, want) in [
        (
            "{ male = \"if(1 > 0, 0.5, zz)\", female = 0.5 }",
            "pop.toml:5:35: unknown name 'zz'",
        ),
        (
            "{ male = 'if(1 > 0, 0.5, zz)', female = 0.5 }",
            "pop.toml:5:35: unknown name 'zz'",
        ),
        (
            "{ male = \"if(1\\t> 0, 0.5, zz)\", female = 0.5 }",
            "pop.toml:5:36: unknown name 'zz'",
        ),
        (
            "{ male = 0.5, female = '''0.5 * zz''' }",
            "pop.toml:5:42: unknown name 'zz'",
        ),
    ] {
        let err = located("cl = 1", levels);
        assert!(err.contains(want), "{levels}\nwant {want}\ngot  {err}");
    }
}

/// Category labels are constants in expressions, written as names there; covariates and etas
/// are names in expressions too. A label that cannot be written as a name, or any of them named
/// as a function, is an error located at the name.
#[test]
fn labels_and_names_that_expressions_cannot_use_are_located_errors() {
    const PARAMS: &str = "cl = \"exp(eta_cl)\"";
    for (levels, want) in [
        (
            "{ \"u m\" = 0.5, female = 0.5 }",
            "pop.toml:5:12: label of 'sex': 'u m' is not a valid name",
        ),
        (
            "{ male = 0.5, 1um = 0.5 }",
            "pop.toml:5:24: label of 'sex': '1um' is not a valid name",
        ),
        (
            "{ male = 0.5, log = 0.5 }",
            "pop.toml:5:24: label of 'sex': 'log' cannot be a name here: it is the name of a function",
        ),
        (
            "{ exp = 0.5, female = 0.5 }",
            "pop.toml:5:12: label of 'sex': 'exp' cannot be a name here: it is the name of a function",
        ),
        (
            "{ male = 0.5, 'if' = 0.5 }",
            "pop.toml:5:24: label of 'sex': 'if' cannot be a name here",
        ),
    ] {
        let err = located(PARAMS, levels);
        assert!(err.contains(want), "{levels}\nwant {want}\ngot  {err}");
    }
    // A covariate or an eta named as a function.
    let ok = "[population]\nname = \"n\"\n\n[covariates.wt]\ndist = \"normal\"\nmean = 70\nsd = 10\n\n\
              [parameters]\ncl = \"wt * exp(eta_cl)\"\n\n[[omega]]\netas = [\"eta_cl\"]\nvariance = [0.1]\n";
    assert!(Population::parse("pop.toml", ok).is_ok());
    for (from, to, want) in [
        (
            "[covariates.wt]",
            "[covariates.log]",
            "pop.toml:4:1: covariate 'log' cannot be a name here: it is the name of a function",
        ),
        (
            "etas = [\"eta_cl\"]\nvariance = [0.1]",
            "etas = [\"eta_cl\", 'sqrt']\nvariance = [0.1, 0.1]",
            "pop.toml:13:20: eta 'sqrt' cannot be a name here: it is the name of a function",
        ),
    ] {
        let text = ok.replace(from, to);
        let err = match Population::parse("pop.toml", &text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{to}\nwant {want}\ngot  {err}");
    }
}

/// A categorical compared with a label of another categorical is refused where the label is
/// written: labels are constants with the code of their position, so the comparison would hold
/// for whichever level has that position. Its own labels, in either order and with every
/// comparison, are accepted.
#[test]
fn a_categorical_compared_with_another_ones_label_is_a_located_error() {
    let text = |expr: &str| {
        format!(
            "[covariates.g1]\nlevels = {{ a = 0.5, b = 0.3, rm = 0.2 }}\n\n\
             [covariates.g2]\nlevels = {{ pm = 0.2, im = 0.5, indet = 0.3 }}\n\n\
             [covariates.x]\nexpr = \"{expr}\"\n"
        )
    };
    for expr in [
        "if(g2 == im, 1, 0)",
        "if(pm != g2, 1, 0)",
        "if(g1 >= b, 1, 0) + if(g2 < indet, 1, 0)",
        "g1 == g2",
    ] {
        if let Err(e) = Population::parse("pop.toml", &text(expr)) {
            panic!("{expr}: {e}");
        }
    }
    for (expr, col, label, of) in [
        ("if(g2 == rm, 1, 0)", 18, "rm", "g2"),
        ("if(b != g2, 1, 0)", 12, "b", "g2"),
        ("1 + if(g1 > indet, 1, 0)", 21, "indet", "g1"),
    ] {
        let err = match Population::parse("pop.toml", &text(expr)) {
            Ok(_) => panic!("accepted: {expr}"),
            Err(e) => e.to_string(),
        };
        let want = format!("pop.toml:8:{col}: '{label}' is not a level of '{of}' (its levels: ");
        assert!(err.contains(&want), "{expr}\nwant {want}\ngot  {err}");
    }
}

/// The `[population]` table may be left out: the population is then named after its file,
/// and samples exactly as it does with the table.
#[test]
fn a_file_without_its_header_is_named_after_the_file() {
    let bare = GOOD.replace("[population]\nname = \"t\"\n", "");
    assert_ne!(bare, GOOD);
    let named = Population::parse("t.toml", GOOD).unwrap();
    let unnamed = Population::parse("dir/my_population.toml", &bare).unwrap();
    assert_eq!(named.name, "t");
    assert_eq!(unnamed.name, "my_population");
    let (mut a, mut b) = (SampledChunk::default(), SampledChunk::default());
    named.sample(11, 0, 500, &mut a);
    unnamed.sample(11, 0, 500, &mut b);
    assert_eq!(a.parameters, b.parameters);
    assert_eq!(a.covariates, b.covariates);
}

/// A misspelt key of a covariate table is refused with the keys of that covariate's kind of
/// draw (not every kind's) and the one likely meant; a misspelt name in an expression gets the
/// covariate, label or eta likely meant.
#[test]
fn misspelt_keys_and_names_get_the_one_likely_meant() {
    let err = |text: &str| match Population::parse("pop.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    };
    let e = err("[covariates.wt]\ndist = \"normal\"\nmean = 70\nsdd = 10\n");
    assert_eq!(
        e,
        "pop.toml:4:1: covariate 'wt': unknown key `sdd`; a normal takes `mean`, `sd`, `lo`, \
         `hi` (and, as every covariate, `dist`, `target`, `source`); did you mean `sd`?"
    );
    let e = err("[covariates]\nwt = { dist = \"lognormal\", median = 70, cvv = 0.2 }\n");
    assert!(
        e.starts_with("pop.toml:2:41: covariate 'wt': unknown key `cvv`; a log-normal takes")
            && e.ends_with("did you mean `cv`?"),
        "{e}"
    );
    // A key no kind takes, with a kind the file does not name: every key is listed.
    let e = err("[covariates.z]\ndist = \"gamma\"\nshape = 2\n");
    assert!(
        e.contains("unknown key `shape`; a covariate takes `dist`"),
        "{e}"
    );
    let e = err("[covariates.sex]\nlevels = { male = 0.5, female = 0.5 }\n\
         [covariates.wt]\ndist = \"normal\"\nmean = \"if(sex == femal, 60, 75)\"\nsd = 10\n\
         [parameters]\ncl = \"2 * exp(eta_cll) * (wtt / 70)\"\n\
         [[omega]]\netas = [\"eta_cl\"]\nvariance = [0.1]\n");
    for want in [
        "pop.toml:5:19: unknown name 'femal'; did you mean 'female'?",
        "pop.toml:8:15: unknown name 'eta_cll'; did you mean 'eta_cl'?",
    ] {
        assert!(e.contains(want), "want {want}\ngot  {e}");
    }
}
