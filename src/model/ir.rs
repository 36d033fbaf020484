//! The model DSL → IR: declarations resolved to indices, validated, ready for lowering.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::expr::{Expr, Var};
use super::parse::{check_identifier, describe, lex, resolve, Parser, Tok, RESERVED};
use crate::diag::{Diagnostic, SourceFile, Span};

#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub default: f64,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateDecl {
    pub name: String,
    /// Initial value (parameters only); 0 when absent.
    pub init: Option<Expr>,
    pub span: Span,
    /// Where the initial value is given (`name(0) = …`).
    pub init_span: Option<Span>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DerivedDecl {
    pub name: String,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    pub name: String,
    pub expr: Expr,
    pub span: Span,
}

/// Dosing declarations of one state (expressions of parameters only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompartmentDosing {
    pub lag: Option<Expr>,
    pub bioavailability: Option<Expr>,
    pub rate: Option<Expr>,
    pub duration: Option<Expr>,
    /// Where each is declared: lag, bioavailability, rate, duration.
    pub spans: [Option<Span>; 4],
}

/// A parsed, resolved and validated model.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub description: String,
    pub source: SourceFile,
    pub params: Vec<ParamDecl>,
    pub states: Vec<StateDecl>,
    pub derived: Vec<DerivedDecl>,
    /// Right-hand sides by state index.
    pub odes: Vec<Expr>,
    /// Where each right-hand side is given (the state's name in `d/dt(name)`), by state index.
    pub ode_spans: Vec<Span>,
    pub outputs: Vec<OutputDecl>,
    /// By state index.
    pub dosing: Vec<CompartmentDosing>,
}

/// Everything wrong with a model file, in source order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ModelError(pub Vec<Diagnostic>);

impl ModelError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Param(usize),
    State(usize),
    Derived(usize),
    Output(usize),
}

enum Stmt {
    Param(String, Span, f64),
    States(Vec<(String, Span)>),
    Derived(String, Span, Expr),
    Ode(String, Span, Expr),
    Init(String, Span, Expr),
    Output(String, Span, Expr),
    Dosing(&'static str, String, Span, Expr),
}

/// The expression of a statement whose header parsed, or a placeholder and the error in `bad`:
/// the statement still declares its name or equation, so one mistake is reported once, not
/// again as an unknown name or a missing equation further on.
fn expr_or_placeholder(p: &mut Parser<'_>, bad: &mut Option<Diagnostic>) -> Expr {
    p.expr().unwrap_or_else(|e| {
        *bad = Some(e);
        Expr::Num(0.0)
    })
}

/// One statement. `Err` where even its header did not parse; `Ok` with the error in `bad`
/// where only its expression or its end did.
fn parse_stmt(p: &mut Parser<'_>, bad: &mut Option<Diagnostic>) -> Result<Stmt, Diagnostic> {
    let first = p.peek().clone();
    let Tok::Ident(word) = &first.tok else {
        return Err(p.src.error(
            first.span,
            format!("expected a statement, found {}", describe(&first.tok)),
        ));
    };
    let stmt = match word.as_str() {
        "param" => {
            p.bump();
            let (name, span) = p.expect_ident()?;
            p.expect_op("=")?;
            let neg = if p.is_op("-") {
                p.bump();
                true
            } else {
                false
            };
            let t = p.bump();
            let Tok::Num(v) = t.tok else {
                // Still declared, so that its uses are not reported too.
                *bad = Some(p.src.error(t.span, "a parameter's default must be a number (derived quantities are `name = expression`)"));
                return Ok(Stmt::Param(name, span, 0.0));
            };
            Stmt::Param(name, span, if neg { -v } else { v })
        }
        "state" => {
            p.bump();
            let mut names = vec![p.expect_ident()?];
            while p.is_op(",") {
                p.bump();
                names.push(p.expect_ident()?);
            }
            Stmt::States(names)
        }
        "output" => {
            p.bump();
            let (name, span) = p.expect_ident()?;
            p.expect_op("=")?;
            Stmt::Output(name, span, expr_or_placeholder(p, bad))
        }
        "d" if p.peek_at(1).tok == Tok::Op("/") => {
            p.bump();
            p.bump();
            let (dt, dt_span) = p.expect_ident()?;
            if dt != "dt" {
                return Err(p.src.error(dt_span, "expected d/dt(state)"));
            }
            p.expect_op("(")?;
            let (name, span) = p.expect_ident()?;
            p.expect_op(")")?;
            p.expect_op("=")?;
            Stmt::Ode(name, span, expr_or_placeholder(p, bad))
        }
        w @ ("alag" | "f" | "rate" | "dur") if p.peek_at(1).tok == Tok::Op("(") => {
            let kind: &'static str = match w {
                "alag" => "alag",
                "f" => "f",
                "rate" => "rate",
                _ => "dur",
            };
            p.bump();
            p.bump();
            let (name, span) = p.expect_ident()?;
            p.expect_op(")")?;
            p.expect_op("=")?;
            Stmt::Dosing(kind, name, span, expr_or_placeholder(p, bad))
        }
        _ => {
            let (name, span) = p.expect_ident()?;
            if p.is_op("(") {
                p.bump();
                let t = p.bump();
                if t.tok != Tok::Num(0.0) {
                    return Err(p.src.error(
                        t.span,
                        format!("expected {name}(0) = … for an initial value"),
                    ));
                }
                p.expect_op(")")?;
                p.expect_op("=")?;
                Stmt::Init(name, span, expr_or_placeholder(p, bad))
            } else {
                p.expect_op("=")?;
                Stmt::Derived(name, span, expr_or_placeholder(p, bad))
            }
        }
    };
    let t = p.peek().clone();
    if bad.is_none() && t.tok != Tok::Newline && t.tok != Tok::Eof {
        *bad = Some(p.src.error(
            t.span,
            format!(
                "unexpected {} at the end of the statement",
                describe(&t.tok)
            ),
        ));
    }
    Ok(stmt)
}

/// Variables an expression uses (resolved), for dependency checks.
fn uses(e: &Expr) -> (bool, bool, Vec<usize>) {
    let (mut time, mut state, mut derived) = (false, false, Vec::new());
    e.visit(&mut |n| match n {
        Expr::Var(Var::Time) => time = true,
        Expr::Var(Var::State(_)) => state = true,
        Expr::Var(Var::Derived(k)) => derived.push(*k),
        _ => {}
    });
    (time, state, derived)
}

impl Model {
    /// The parameters' default values, in declaration order.
    pub fn defaults(&self) -> Vec<f64> {
        self.params.iter().map(|p| p.default).collect()
    }

    /// Parses and validates a model file. `file_name` locates diagnostics; the model's name is
    /// the file stem.
    pub fn parse(file_name: &str, text: &str) -> Result<Model, ModelError> {
        // A byte-order mark, as some editors on Windows write, is not part of the text.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let src = SourceFile::new(file_name, text);
        let mut errors: Vec<Diagnostic> = Vec::new();
        let stem = std::path::Path::new(file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| file_name.to_string());
        let description = text
            .lines()
            .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
            .filter_map(|l| l.trim_start().strip_prefix('#'))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");

        // Statements, line by line: an error skips to the next line.
        let toks = match lex(&src, Span::new(0, text.len())) {
            Ok(t) => t,
            Err(e) => return Err(ModelError(vec![e])),
        };
        let mut stmts = Vec::new();
        let mut line: Vec<_> = Vec::new();
        for t in toks {
            let end = matches!(t.tok, Tok::Newline | Tok::Eof);
            line.push(t.clone());
            if end {
                if line.len() > 1 {
                    let mut p = Parser::new(&src, std::mem::take(&mut line));
                    let mut bad = None;
                    match parse_stmt(&mut p, &mut bad) {
                        Ok(s) => stmts.push(s),
                        Err(e) => errors.push(e),
                    }
                    errors.extend(bad);
                }
                line.clear();
            }
        }
        let syntax_errors = !errors.is_empty();

        // Declarations and names.
        let mut names: HashMap<String, (Kind, Span)> = HashMap::new();
        let mut m = Model {
            name: stem,
            description,
            source: src.clone(),
            params: vec![],
            states: vec![],
            derived: vec![],
            odes: vec![],
            ode_spans: vec![],
            outputs: vec![],
            dosing: vec![],
        };
        let mut declare =
            |name: &str, span: Span, kind: Kind, errors: &mut Vec<Diagnostic>| -> bool {
                if RESERVED.contains(&name) {
                    errors.push(src.error(
                        span,
                        format!("'{name}' is a reserved word and cannot be used as a name"),
                    ));
                    return false;
                }
                if let Err(msg) = check_identifier(name) {
                    errors.push(src.error(span, msg));
                    return false;
                }
                if let Some((_, prev)) = names.get(name) {
                    let (l, c) = src.line_col(prev.start);
                    errors.push(src.error(
                        span,
                        format!("'{name}' is already declared at line {l}, column {c}"),
                    ));
                    return false;
                }
                names.insert(name.to_string(), (kind, span));
                true
            };
        // Names whose `state` declaration was refused (already declared, reserved): their
        // equations and the missing state are that error's consequences, not errors of their own.
        let mut refused_states = std::collections::HashSet::new();
        // Params and states first: they may be used anywhere.
        for s in &stmts {
            match s {
                Stmt::Param(n, sp, v)
                    if declare(n, *sp, Kind::Param(m.params.len()), &mut errors) =>
                {
                    m.params.push(ParamDecl {
                        name: n.clone(),
                        default: *v,
                        span: *sp,
                    });
                }
                Stmt::States(list) => {
                    for (n, sp) in list {
                        if declare(n, *sp, Kind::State(m.states.len()), &mut errors) {
                            m.states.push(StateDecl {
                                name: n.clone(),
                                init: None,
                                span: *sp,
                                init_span: None,
                            });
                        } else {
                            refused_states.insert(n.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        for s in &stmts {
            match s {
                Stmt::Derived(n, sp, e)
                    if declare(n, *sp, Kind::Derived(m.derived.len()), &mut errors) =>
                {
                    m.derived.push(DerivedDecl {
                        name: n.clone(),
                        expr: e.clone(),
                        span: *sp,
                    });
                }
                Stmt::Output(n, sp, e)
                    if declare(n, *sp, Kind::Output(m.outputs.len()), &mut errors) =>
                {
                    m.outputs.push(OutputDecl {
                        name: n.clone(),
                        expr: e.clone(),
                        span: *sp,
                    });
                }
                _ => {}
            }
        }
        let n = m.states.len();
        let mut odes: Vec<Option<Expr>> = vec![None; n];
        m.ode_spans = m.states.iter().map(|s| s.span).collect();
        m.dosing = vec![CompartmentDosing::default(); n];

        // Resolution. A derived quantity may use only derived quantities defined before it.
        let lookup_before = |limit: usize| {
            let names = &names;
            move |s: &str| -> Option<Var> {
                match names.get(s).map(|(k, _)| *k)? {
                    Kind::Param(i) => Some(Var::Param(i)),
                    Kind::State(i) => Some(Var::State(i)),
                    Kind::Derived(i) if i < limit => Some(Var::Derived(i)),
                    _ => None,
                }
            }
        };
        let explain = |e: Diagnostic, expr: &Expr, limit: usize| -> Diagnostic {
            // Turn "unknown name" into something more useful when the name exists.
            for (name, span) in expr.free_names() {
                if lookup_before(limit)(&name).is_none() {
                    if let Some((kind, _)) = names.get(&name) {
                        let why = match kind {
                            Kind::Derived(_) => format!("'{name}' is used before it is defined (derived quantities are evaluated in order)"),
                            Kind::Output(_) => format!("'{name}' is an output; outputs cannot be used in other expressions"),
                            _ => format!("'{name}' cannot be used here"),
                        };
                        return src.error(span, why);
                    }
                    // The names usable here, in the order they were declared.
                    let mut known: Vec<(&str, Span)> = names
                        .iter()
                        .filter(|(n, _)| lookup_before(limit)(n).is_some())
                        .map(|(n, (_, sp))| (n.as_str(), *sp))
                        .collect();
                    known.sort_by_key(|(_, sp)| sp.start);
                    let hint = crate::diag::did_you_mean(&name, known.iter().map(|(n, _)| *n));
                    return Diagnostic {
                        message: format!("{}{hint}", e.message),
                        ..e
                    };
                }
            }
            e
        };
        for k in 0..m.derived.len() {
            let mut e = m.derived[k].expr.clone();
            if let Err(d) = resolve(&mut e, &src, &lookup_before(k)) {
                errors.push(explain(d, &m.derived[k].expr, k));
            }
            m.derived[k].expr = e;
        }
        let all = m.derived.len();
        for o in &mut m.outputs {
            let orig = o.expr.clone();
            if let Err(d) = resolve(&mut o.expr, &src, &lookup_before(all)) {
                errors.push(explain(d, &orig, all));
            }
        }
        let state_names: Vec<String> = m.states.iter().map(|s| s.name.clone()).collect();
        let state_of =
            |name: &str, span: Span, what: &str, errors: &mut Vec<Diagnostic>| -> Option<usize> {
                match names.get(name).map(|(k, _)| *k) {
                    Some(Kind::State(i)) => Some(i),
                    _ if refused_states.contains(name) => None,
                    Some(_) => {
                        errors.push(src.error(span, format!("{what}: '{name}' is not a state")));
                        None
                    }
                    None => {
                        let hint =
                            crate::diag::did_you_mean(name, state_names.iter().map(String::as_str));
                        errors
                            .push(src.error(span, format!("{what}: unknown state '{name}'{hint}")));
                        None
                    }
                }
            };
        // Derived quantities that depend on states or time cannot feed initial values or dosing.
        let mut dynamic = vec![false; m.derived.len()];
        for k in 0..m.derived.len() {
            let (t, s, d) = uses(&m.derived[k].expr);
            dynamic[k] = t || s || d.iter().any(|j| dynamic[*j]);
        }
        let static_only = |e: &Expr| {
            let (t, s, d) = uses(e);
            !t && !s && !d.iter().any(|j| dynamic[*j])
        };
        for s in &stmts {
            match s {
                Stmt::Ode(name, sp, e) => {
                    let Some(i) = state_of(name, *sp, "d/dt", &mut errors) else {
                        continue;
                    };
                    if odes[i].is_some() {
                        errors.push(src.error(*sp, format!("d/dt({name}) is given twice")));
                        continue;
                    }
                    let mut e = e.clone();
                    m.ode_spans[i] = *sp;
                    match resolve(&mut e, &src, &lookup_before(all)) {
                        Ok(()) => odes[i] = Some(e),
                        Err(d) => {
                            errors.push(explain(d, &e, all));
                            odes[i] = Some(Expr::Num(0.0));
                        }
                    }
                }
                Stmt::Init(name, sp, e) => {
                    let Some(i) = state_of(name, *sp, "initial value", &mut errors) else {
                        continue;
                    };
                    let mut e = e.clone();
                    match resolve(&mut e, &src, &lookup_before(all)) {
                        Ok(()) if !static_only(&e) => errors.push(src.error(*sp, format!("the initial value of '{name}' may depend on parameters only, not on states or t"))),
                        Ok(()) if m.states[i].init.is_some() => errors.push(src.error(*sp, format!("{name}(0) is given twice"))),
                        Ok(()) => {
                            m.states[i].init = Some(e);
                            m.states[i].init_span = Some(*sp);
                        }
                        Err(d) => errors.push(explain(d, &e, all)),
                    }
                }
                Stmt::Dosing(kind, name, sp, e) => {
                    let Some(i) = state_of(name, *sp, kind, &mut errors) else {
                        continue;
                    };
                    let mut e = e.clone();
                    match resolve(&mut e, &src, &lookup_before(all)) {
                        Ok(()) if !static_only(&e) => errors.push(src.error(
                            *sp,
                            format!(
                                "{kind}({name}) may depend on parameters only, not on states or t"
                            ),
                        )),
                        Ok(()) => {
                            let d = &mut m.dosing[i];
                            let (slot, at) = match *kind {
                                "alag" => (&mut d.lag, 0),
                                "f" => (&mut d.bioavailability, 1),
                                "rate" => (&mut d.rate, 2),
                                _ => (&mut d.duration, 3),
                            };
                            if slot.is_some() {
                                errors
                                    .push(src.error(*sp, format!("{kind}({name}) is given twice")));
                            }
                            *slot = Some(e);
                            d.spans[at] = Some(*sp);
                        }
                        Err(d) => errors.push(explain(d, &e, all)),
                    }
                }
                _ => {}
            }
        }
        // A statement lost or cut short by a syntax error (an open parenthesis takes the next
        // lines with it) may be the missing declaration or equation: that error is the one to
        // report.
        if m.states.is_empty() && !syntax_errors && refused_states.is_empty() {
            errors.push(src.error(
                Span::new(text.len(), text.len()),
                "the model declares no state (`state a, b`)",
            ));
        }
        if m.outputs.is_empty() && !syntax_errors {
            errors.push(src.error(
                Span::new(text.len(), text.len()),
                "the model declares no output (`output cp = central / v`)",
            ));
        }
        for (i, o) in odes.iter().enumerate() {
            if o.is_none() && !syntax_errors {
                errors.push(src.error(
                    m.states[i].span,
                    format!(
                        "state '{}' has no equation d/dt({}) = …",
                        m.states[i].name, m.states[i].name
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|d| (d.line, d.col));
            errors.dedup();
            return Err(ModelError(errors));
        }
        m.odes = odes
            .into_iter()
            .map(|o| o.unwrap_or(Expr::Num(0.0)))
            .collect();
        Ok(m)
    }

    /// `sha256:<hex>` of the source text.
    pub fn hash(&self) -> String {
        let d = Sha256::digest(self.source.text.as_bytes());
        format!(
            "sha256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name == name)
    }
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|s| s.name == name)
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|s| s.name == name)
    }

    /// Whether output k depends on time directly: `t` in its expression or in a derived
    /// quantity it reads.
    pub fn output_uses_time(&self, k: usize) -> bool {
        // Whether e reads t, given which derived quantities do.
        fn uses(e: &Expr, timed: &[bool]) -> bool {
            match e {
                Expr::Num(_) => false,
                Expr::Var(Var::Time) => true,
                Expr::Var(Var::Derived(i)) => timed.get(*i).copied().unwrap_or(false),
                Expr::Var(_) => false,
                Expr::Unary(_, a) => uses(a, timed),
                Expr::Binary(_, a, b) => uses(a, timed) || uses(b, timed),
                Expr::Call(_, args) => args.iter().any(|a| uses(a, timed)),
                Expr::If(c, a, b) => uses(c, timed) || uses(a, timed) || uses(b, timed),
            }
        }
        // Derived quantities read only those before them.
        let mut timed = Vec::with_capacity(self.derived.len());
        for d in &self.derived {
            let u = uses(&d.expr, &timed);
            timed.push(u);
        }
        self.outputs.get(k).is_some_and(|o| uses(&o.expr, &timed))
    }

    /// [`Model::output_index`], or the message "the model has no output 'x' (outputs: …)".
    pub fn output_named(&self, name: &str) -> Result<usize, String> {
        self.output_index(name).ok_or_else(|| {
            let known: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
            format!(
                "the model has no output '{name}' (outputs: {}){}",
                known.join(", "),
                crate::diag::did_you_mean(name, known.iter().copied())
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const TWO_CMT: &str = "# two-compartment model with first-order absorption
param ka = 1.2    # 1/h
param cl = 5.0    # L/h
param v1 = 30     # L
param q  = 2.5    # L/h
param v2 = 60     # L
state depot, central, periph
k10 = cl / v1
d/dt(depot)   = -ka * depot
d/dt(central) =  ka * depot - (k10 + q/v1) * central + q/v2 * periph
d/dt(periph)  =  q/v1 * central - q/v2 * periph
output cp = central / v1
";

    #[test]
    fn parses_the_two_compartment_example() {
        let m = Model::parse("two_cmt_oral.vpm", TWO_CMT).unwrap();
        assert_eq!(m.name, "two_cmt_oral");
        assert_eq!(
            m.description,
            "two-compartment model with first-order absorption"
        );
        let names: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ka", "cl", "v1", "q", "v2"]);
        assert_eq!(m.states.len(), 3);
        assert_eq!(m.state_index("central"), Some(1));
        assert_eq!(
            m.derived[0].expr,
            Expr::Binary(
                super::super::expr::BinOp::Div,
                Box::new(Expr::Var(Var::Param(1))),
                Box::new(Expr::Var(Var::Param(2)))
            )
        );
        assert_eq!(m.output_index("cp"), Some(0));
        assert!(m.hash().starts_with("sha256:"));
    }

    #[test]
    fn continuation_lines_and_declarations() {
        let src = "param a = -2\nstate x\nf(x) = 0.5\nalag(x) = a * a\nx(0) = 3\nd/dt(x) = (a *\n  x)\noutput y = x\n";
        let m = Model::parse("m.vpm", src).unwrap();
        assert_eq!(m.params[0].default, -2.0);
        assert!(m.dosing[0].bioavailability.is_some() && m.dosing[0].lag.is_some());
        assert!(m.states[0].init.is_some());
    }
}
