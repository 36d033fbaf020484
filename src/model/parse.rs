//! Lexer and parser for the expression language and the model DSL statements.
//!
//! The parser never panics: every problem becomes a [`Diagnostic`] located in its file, and
//! nesting is capped so that hostile input cannot overflow the stack.

use super::expr::{BinOp, Expr, Func, UnOp, Var};
use crate::diag::{Diagnostic, SourceFile, Span};

/// Deepest expression nesting accepted (docs/model-language.md): each pair of parentheses,
/// function call, unary operator and exponent opens a level. A binary operator's right
/// operand stays on its level (the parser's recursion there is bounded by the precedences),
/// so the recursion, and the depth of the tree it builds above each chain of binary
/// operators, is bounded by a multiple of this.
pub const MAX_NESTING: usize = 64;
/// Deepest expression tree accepted: a chain of binary operators (`a + b + c …`) builds a tree
/// as deep as it is long, and the passes over the tree recurse along it, so its depth is
/// bounded for them (docs/model-language.md): about 2 000 terms in one expression.
pub const MAX_TREE_DEPTH: usize = 2048;
/// Longest identifier accepted.
pub const MAX_IDENT: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    Newline,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

const OPS: [&str; 19] = [
    "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "^", "(", ")", ",", "=", "<", ">", "!",
    ".",
];

/// Splits `range` of the source into tokens. Newlines inside parentheses are dropped, so a
/// statement continues while parentheses are open; comments run from `#` to the end of line.
pub fn lex(src: &SourceFile, range: Span) -> Result<Vec<Token>, Diagnostic> {
    let text = &src.text;
    let end = range.end.min(text.len());
    let bytes = text.as_bytes();
    let mut i = range.start;
    let mut out = Vec::new();
    let mut depth: i64 = 0;
    while i < end {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < end && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\n' => {
                if depth <= 0 {
                    out.push(Token {
                        tok: Tok::Newline,
                        span: Span::new(i, i + 1),
                    });
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'0'..=b'9' | b'.' if c != b'.' || (i + 1 < end && bytes[i + 1].is_ascii_digit()) => {
                let start = i;
                while i < end && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                if i < end && (bytes[i] == b'e' || bytes[i] == b'E') {
                    let mut j = i + 1;
                    if j < end && (bytes[j] == b'+' || bytes[j] == b'-') {
                        j += 1;
                    }
                    if j < end && bytes[j].is_ascii_digit() {
                        i = j;
                        while i < end && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let s = &text[start..i];
                let span = Span::new(start, i);
                let v: f64 = s
                    .parse()
                    .map_err(|_| src.error(span, format!("'{s}' is not a number")))?;
                if !v.is_finite() {
                    return Err(src.error(
                        span,
                        format!(
                            "number '{s}' is out of range: beyond the largest f64 ({:e})",
                            f64::MAX
                        ),
                    ));
                }
                // A nonzero literal that would read as 0 or as a subnormal (which keeps only
                // some of its digits) is refused as one too large is: 0 is written as 0.
                if v < f64::MIN_POSITIVE
                    && s.bytes()
                        .take_while(|b| !matches!(b, b'e' | b'E'))
                        .any(|b| matches!(b, b'1'..=b'9'))
                {
                    return Err(src.error(
                        span,
                        format!(
                            "number '{s}' is below the smallest normal f64 ({:e}): write 0 \
                             for zero, or the quantity in other units",
                            f64::MIN_POSITIVE
                        ),
                    ));
                }
                out.push(Token {
                    tok: Tok::Num(v),
                    span,
                });
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < end && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(text[start..i].to_string()),
                    span: Span::new(start, i),
                });
            }
            _ => {
                let rest = &text[i..end];
                let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
                    let ch = rest.chars().next().unwrap_or('?');
                    return Err(src.error(
                        Span::new(i, i + ch.len_utf8()),
                        format!("unexpected character '{}'", ch.escape_debug()),
                    ));
                };
                if *op == "." {
                    return Err(src.error(Span::new(i, i + 1), "unexpected character '.'"));
                }
                match *op {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    _ => {}
                }
                out.push(Token {
                    tok: Tok::Op(op),
                    span: Span::new(i, i + op.len()),
                });
                i += op.len();
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span::new(end, end),
    });
    Ok(out)
}

/// Checks an identifier against the strict grammar (`[A-Za-z][A-Za-z0-9_]*`, ≤ 64 characters,
/// no `__`). Returns the reason when it fails.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let first = name.chars().next();
    if !first.is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "'{name}' is not a valid name: names start with a letter"
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "'{name}' is not a valid name: use letters, digits and '_'"
        ));
    }
    if name.contains("__") {
        return Err(format!("'{name}' is not a valid name: '__' is reserved"));
    }
    if name.len() > MAX_IDENT {
        return Err(format!(
            "name '{}…' is longer than {MAX_IDENT} characters",
            &name[..16]
        ));
    }
    Ok(())
}

/// Words that cannot be declared as names.
pub const RESERVED: [&str; 33] = [
    "t", "pi", "param", "state", "output", "if", "d", "dt", "alag", "f", "rate", "dur", "exp",
    "log", "log10", "sqrt", "pow", "abs", "min", "max", "sin", "cos", "tanh", "atan", "erf",
    "erfc", "phi", "floor", "ceil", "trunc", "mod", "expit", "logit",
];

/// Names that an expression reads as values of its own (time and the constant π), so no
/// quantity of a model or a population may take them.
pub const VALUE_NAMES: [&str; 2] = ["t", "pi"];

/// Checks the name of a population's covariate, eta or parameter: the identifier grammar, and
/// not a name that expressions read as a value of their own.
pub fn check_population_name(name: &str) -> Result<(), String> {
    check_identifier(name)?;
    check_not_value_name(name)
}

/// Refuses `t` and `pi` as the name of a quantity or a category label.
pub fn check_not_value_name(name: &str) -> Result<(), String> {
    if VALUE_NAMES.contains(&name) {
        return Err(format!(
            "'{name}' cannot be a name here: expressions read it as {}",
            if name == "t" {
                "time"
            } else {
                "the constant π"
            }
        ));
    }
    Ok(())
}

/// The functions an expression may call, as error messages list them.
fn function_list() -> String {
    function_names().join(", ")
}

fn function_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
    names.push("if");
    names
}

/// A cursor over tokens with the expression grammar.
pub struct Parser<'a> {
    pub src: &'a SourceFile,
    pub toks: Vec<Token>,
    pub pos: usize,
    /// The depth of the tree the last parsing function returned (a leaf: 1).
    tree: usize,
}

impl<'a> Parser<'a> {
    pub fn new(src: &'a SourceFile, toks: Vec<Token>) -> Self {
        Parser {
            src,
            toks,
            pos: 0,
            tree: 0,
        }
    }

    pub fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    pub fn peek_at(&self, k: usize) -> &Token {
        &self.toks[(self.pos + k).min(self.toks.len() - 1)]
    }

    pub fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    pub fn is_op(&self, op: &str) -> bool {
        matches!(&self.peek().tok, Tok::Op(o) if *o == op)
    }

    pub fn expect_op(&mut self, op: &str) -> Result<Span, Diagnostic> {
        if self.is_op(op) {
            Ok(self.bump().span)
        } else {
            let t = self.peek().clone();
            Err(self.src.error(
                t.span,
                format!("expected '{op}', found {}", describe(&t.tok)),
            ))
        }
    }

    /// The error for a parenthesis opened at `open` and not closed where the next token is.
    /// A statement goes on over lines while a parenthesis is open, so a token on a later line
    /// than the parenthesis is most likely the next statement: the error then points at the
    /// parenthesis.
    fn unclosed(&self, open: Span, expected: &str) -> Diagnostic {
        let p = self.peek();
        let later_line = self.src.line_col(p.span.start).0 > self.src.line_col(open.start).0;
        if p.tok == Tok::Eof || p.tok == Tok::Newline {
            self.src.error(open, "unclosed '('")
        } else if later_line {
            let (l, c) = self.src.line_col(p.span.start);
            self.src.error(
                open,
                format!(
                    "unclosed '(': the statement runs on to {} at line {l}, column {c} \
                     (a statement continues over lines while a parenthesis is open)",
                    describe(&p.tok)
                ),
            )
        } else {
            self.src.error(
                p.span,
                format!("expected {expected}, found {}", describe(&p.tok)),
            )
        }
    }

    pub fn expect_ident(&mut self) -> Result<(String, Span), Diagnostic> {
        let t = self.bump();
        match t.tok {
            Tok::Ident(s) => Ok((s, t.span)),
            other => Err(self.src.error(
                t.span,
                format!("expected a name, found {}", describe(&other)),
            )),
        }
    }

    /// Parses a whole expression.
    pub fn expr(&mut self) -> Result<Expr, Diagnostic> {
        self.binary(0, 0)
    }

    /// The level inside one at `depth` that the token at `at` opens (a parenthesis, a unary
    /// operator, `^`); an error there beyond [`MAX_NESTING`].
    fn open_level(&self, depth: usize, at: Span) -> Result<usize, Diagnostic> {
        if depth >= MAX_NESTING {
            return Err(self.src.error(
                at,
                format!(
                    "expression is nested more than {MAX_NESTING} levels deep (each pair of \
                     parentheses, function call, unary operator and exponent opens a level)"
                ),
            ));
        }
        Ok(depth + 1)
    }

    /// A chain of binary operators of precedence `min_prec` and above at nesting level
    /// `depth`.
    fn binary(&mut self, min_prec: u8, depth: usize) -> Result<Expr, Diagnostic> {
        let mut lhs = self.unary(depth)?;
        let mut tree = self.tree;
        loop {
            let (op, prec, right_assoc) = match &self.peek().tok {
                Tok::Op("||") => (BinOp::Or, 1, false),
                Tok::Op("&&") => (BinOp::And, 2, false),
                Tok::Op("<") => (BinOp::Lt, 3, false),
                Tok::Op("<=") => (BinOp::Le, 3, false),
                Tok::Op(">") => (BinOp::Gt, 3, false),
                Tok::Op(">=") => (BinOp::Ge, 3, false),
                Tok::Op("==") => (BinOp::Eq, 3, false),
                Tok::Op("!=") => (BinOp::Ne, 3, false),
                Tok::Op("+") => (BinOp::Add, 4, false),
                Tok::Op("-") => (BinOp::Sub, 4, false),
                Tok::Op("*") => (BinOp::Mul, 5, false),
                Tok::Op("/") => (BinOp::Div, 5, false),
                Tok::Op("^") => (BinOp::Pow, 7, true),
                _ => {
                    self.tree = tree;
                    return Ok(lhs);
                }
            };
            if prec < min_prec {
                self.tree = tree;
                return Ok(lhs);
            }
            let op_span = self.bump().span;
            let rhs = if op == BinOp::Pow {
                // `^` binds tighter than unary minus on its left but accepts one on its right.
                self.unary_pow_rhs(self.open_level(depth, op_span)?)?
            } else {
                // The precedence rises with each such call, which bounds their recursion.
                self.binary(if right_assoc { prec } else { prec + 1 }, depth)?
            };
            if prec == 3
                && matches!(
                    self.peek().tok,
                    Tok::Op("<" | "<=" | ">" | ">=" | "==" | "!=")
                )
            {
                return Err(self.src.error(
                    self.peek().span,
                    "comparisons cannot be chained: use && between them",
                ));
            }
            tree = self.deeper(tree.max(self.tree), op_span)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
    }

    /// The depth of a node above subtrees at most `below` deep (a leaf is 1 deep), the node's
    /// operator at `at`; an error there where the node would be more than [`MAX_TREE_DEPTH`]
    /// operations deep, i.e. its tree more than that plus its leaves (before the tree grows
    /// deeper than its passes can follow, and its drop too).
    fn deeper(&self, below: usize, at: Span) -> Result<usize, Diagnostic> {
        if below > MAX_TREE_DEPTH {
            return Err(self.src.error(
                at,
                format!(
                    "expression is too long: its tree would be more than {MAX_TREE_DEPTH} \
                     operations deep (a chain of binary operators is as deep as it is long); \
                     split it into derived quantities (NAME = EXPR) and add those"
                ),
            ));
        }
        Ok(below + 1)
    }

    /// An exponent (the operand right of `^`), at nesting level `depth`.
    fn unary_pow_rhs(&mut self, depth: usize) -> Result<Expr, Diagnostic> {
        if self.is_op("-") {
            let op = self.bump().span;
            let e = self.unary_pow_rhs(self.open_level(depth, op)?)?;
            self.tree = self.deeper(self.tree, op)?;
            return Ok(Expr::Unary(UnOp::Neg, Box::new(e)));
        }
        self.binary_from_primary(depth)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, Diagnostic> {
        if self.is_op("-") || self.is_op("!") || self.is_op("+") {
            let op = self.bump();
            let inner = self.open_level(depth, op.span)?;
            // Unary binds looser than ^: -x^2 = -(x^2).
            let e = self.binary(6, inner)?;
            self.tree = self.deeper(self.tree, op.span)?;
            return Ok(match op.tok {
                Tok::Op("-") => Expr::Unary(UnOp::Neg, Box::new(e)),
                Tok::Op("!") => Expr::Unary(UnOp::Not, Box::new(e)),
                _ => e,
            });
        }
        self.binary_from_primary(depth)
    }

    fn binary_from_primary(&mut self, depth: usize) -> Result<Expr, Diagnostic> {
        let base = self.primary(depth)?;
        if self.is_op("^") {
            let base_tree = self.tree;
            let op = self.bump().span;
            let e = self.unary_pow_rhs(self.open_level(depth, op)?)?;
            self.tree = self.deeper(base_tree.max(self.tree), op)?;
            return Ok(Expr::Binary(BinOp::Pow, Box::new(base), Box::new(e)));
        }
        Ok(base)
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, Diagnostic> {
        let t = self.bump();
        // A leaf unless a parenthesis or call below says otherwise.
        self.tree = 1;
        match t.tok {
            Tok::Num(v) => Ok(Expr::Num(v)),
            Tok::Op("(") => {
                let e = self.binary(0, self.open_level(depth, t.span)?)?;
                if !self.is_op(")") {
                    return Err(self.unclosed(t.span, "')'"));
                }
                self.bump();
                Ok(e)
            }
            Tok::Ident(name) => {
                if self.is_op("(") {
                    let open = self.bump().span;
                    let inner = self.open_level(depth, open)?;
                    let mut args = Vec::new();
                    let mut below = 0;
                    if !self.is_op(")") {
                        loop {
                            args.push(self.binary(0, inner)?);
                            below = below.max(self.tree);
                            if self.is_op(",") {
                                self.bump();
                                continue;
                            }
                            break;
                        }
                    }
                    if !self.is_op(")") {
                        return Err(self.unclosed(open, "',' or ')'"));
                    }
                    self.bump();
                    self.tree = self.deeper(below, t.span)?;
                    if name == "if" {
                        if args.len() != 3 {
                            return Err(self.src.error(
                                t.span,
                                format!("if(cond, a, b) takes 3 arguments, got {}", args.len()),
                            ));
                        }
                        let mut it = args.into_iter();
                        let (c, a, b) = (
                            it.next().unwrap_or(Expr::Num(0.0)),
                            it.next().unwrap_or(Expr::Num(0.0)),
                            it.next().unwrap_or(Expr::Num(0.0)),
                        );
                        return Ok(Expr::If(Box::new(c), Box::new(a), Box::new(b)));
                    }
                    let Some(f) = Func::from_name(&name) else {
                        return Err(self.src.error(
                            t.span,
                            format!(
                                "unknown function '{name}' (functions: {}){}",
                                function_list(),
                                crate::diag::did_you_mean(&name, function_names())
                            ),
                        ));
                    };
                    if args.len() != f.arity() {
                        return Err(self.src.error(
                            t.span,
                            format!(
                                "{name}() takes {} argument{}, got {}",
                                f.arity(),
                                if f.arity() == 1 { "" } else { "s" },
                                args.len()
                            ),
                        ));
                    }
                    return Ok(Expr::Call(f, args));
                }
                if name == "t" {
                    return Ok(Expr::Var(Var::Time));
                }
                if name == "pi" {
                    return Ok(Expr::Num(std::f64::consts::PI));
                }
                Ok(Expr::Var(Var::Name { name, span: t.span }))
            }
            other => Err(self.src.error(
                t.span,
                format!("expected a value, found {}", describe(&other)),
            )),
        }
    }
}

pub fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v) => format!("number {v}"),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Op(o) => format!("'{o}'"),
        Tok::Newline => "end of line".into(),
        Tok::Eof => "end of input".into(),
    }
}

/// Parses one expression spanning `span` of a source file (e.g. a string value of a TOML file).
pub fn parse_expr(src: &SourceFile, span: Span) -> Result<Expr, Diagnostic> {
    let toks = lex(src, span)?;
    let mut p = Parser::new(
        src,
        toks.into_iter().filter(|t| t.tok != Tok::Newline).collect(),
    );
    if p.peek().tok == Tok::Eof {
        return Err(src.error(span, "empty expression"));
    }
    let e = p.expr()?;
    let t = p.peek().clone();
    if t.tok != Tok::Eof {
        return Err(src.error(
            t.span,
            format!("unexpected {} after the expression", describe(&t.tok)),
        ));
    }
    Ok(e)
}

/// Parses a standalone expression string (errors are located in a source named `name`).
pub fn parse_expr_str(name: &str, text: &str) -> Result<Expr, Diagnostic> {
    let src = SourceFile::new(name, text);
    parse_expr(&src, Span::new(0, text.len()))
}

/// Replaces every [`Var::Name`] using `lookup`; an unknown name is an error at its location.
pub fn resolve(
    expr: &mut Expr,
    src: &SourceFile,
    lookup: &impl Fn(&str) -> Option<Var>,
) -> Result<(), Diagnostic> {
    match expr {
        Expr::Num(_) => Ok(()),
        Expr::Var(v) => {
            if let Var::Name { name, span } = v {
                match lookup(name) {
                    Some(r) => *v = r,
                    None => return Err(src.error(*span, format!("unknown name '{name}'"))),
                }
            }
            Ok(())
        }
        Expr::Unary(_, a) => resolve(a, src, lookup),
        Expr::Binary(_, a, b) => {
            resolve(a, src, lookup)?;
            resolve(b, src, lookup)
        }
        Expr::Call(_, args) => args.iter_mut().try_for_each(|a| resolve(a, src, lookup)),
        Expr::If(c, a, b) => {
            resolve(c, src, lookup)?;
            resolve(a, src, lookup)?;
            resolve(b, src, lookup)
        }
    }
}

impl Expr {
    /// Every unresolved name with its location, in order of appearance.
    pub fn free_names(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        self.visit(&mut |e| {
            if let Expr::Var(Var::Name { name, span }) = e {
                out.push((name.clone(), *span));
            }
        });
        out
    }

    /// Calls `f` on every node, parents first.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Num(_) | Expr::Var(_) => {}
            Expr::Unary(_, a) => a.visit(f),
            Expr::Binary(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.visit(f)),
            Expr::If(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
        }
    }

    /// Direct recursive evaluation (a reference for the lowered programs).
    pub fn eval(&self, lookup: &impl Fn(&Var) -> f64) -> f64 {
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        match self {
            Expr::Num(v) => *v,
            Expr::Var(v) => lookup(v),
            Expr::Unary(UnOp::Neg, a) => -a.eval(lookup),
            Expr::Unary(UnOp::Not, a) => b(a.eval(lookup) == 0.0),
            Expr::Binary(op, x, y) => {
                let (x, y) = (x.eval(lookup), y.eval(lookup));
                match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    BinOp::Pow => x.powf(y),
                    BinOp::Lt => b(x < y),
                    BinOp::Le => b(x <= y),
                    BinOp::Gt => b(x > y),
                    BinOp::Ge => b(x >= y),
                    BinOp::Eq => b(x == y),
                    BinOp::Ne => b(x != y),
                    BinOp::And => b(x != 0.0 && y != 0.0),
                    BinOp::Or => b(x != 0.0 || y != 0.0),
                }
            }
            Expr::Call(f, args) => {
                let a = args.first().map(|a| a.eval(lookup)).unwrap_or(f64::NAN);
                let c = args.get(1).map(|a| a.eval(lookup)).unwrap_or(f64::NAN);
                match f {
                    Func::Exp => a.exp(),
                    Func::Log => a.ln(),
                    Func::Log10 => a.log10(),
                    Func::Sqrt => a.sqrt(),
                    Func::Pow => a.powf(c),
                    Func::Abs => a.abs(),
                    Func::Min => a.min(c),
                    Func::Max => a.max(c),
                    Func::Sin => a.sin(),
                    Func::Cos => a.cos(),
                    Func::Tanh => a.tanh(),
                    Func::Atan => a.atan(),
                    Func::Erf => libm::erf(a),
                    Func::Erfc => libm::erfc(a),
                    Func::Phi => 0.5 * libm::erfc(a * -std::f64::consts::FRAC_1_SQRT_2),
                    Func::Floor => a.floor(),
                    Func::Ceil => a.ceil(),
                    Func::Trunc => a.trunc(),
                    Func::Mod => a - c * (a / c).floor(),
                    Func::Expit => 1.0 / (1.0 + (-a).exp()),
                    Func::Logit => (a / (1.0 - a)).ln(),
                }
            }
            Expr::If(c, x, y) => {
                if c.eval(lookup) != 0.0 {
                    x.eval(lookup)
                } else {
                    y.eval(lookup)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str) -> f64 {
        let e = parse_expr_str("x", text).unwrap();
        e.eval(&|v| match v {
            Var::Name { name, .. } if name == "a" => 2.0,
            Var::Name { name, .. } if name == "b" => 3.0,
            Var::Time => 0.5,
            _ => f64::NAN,
        })
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(ev("1 + 2 * 3"), 7.0);
        assert_eq!(ev("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(ev("-a^2"), -4.0);
        assert_eq!(ev("a^-1"), 0.5);
        assert_eq!(ev("(1 + 2) * 3"), 9.0);
        assert_eq!(ev("a - b - 1"), -2.0);
        assert_eq!(ev("a / b * 3"), 2.0);
        assert_eq!(ev("a < b && b < 4 || 0"), 1.0);
        assert_eq!(ev("!(a > b)"), 1.0);
        assert_eq!(ev("if(a >= 2, 10, 20)"), 10.0);
        assert_eq!(ev("max(a, b) + min(a, b) + pow(a, b)"), 13.0);
        assert_eq!(ev("t * 4"), 2.0);
        assert_eq!(ev(".5 + 1e-1 + 2E1"), 20.6);
        assert!(
            (ev("exp(log(a)) + sqrt(b) - abs(-1) + log10(100)") - (2.0 + 3f64.sqrt() - 1.0 + 2.0))
                .abs()
                < 1e-14
        );
    }

    #[test]
    fn pi_expit_and_logit() {
        assert_eq!(ev("pi"), std::f64::consts::PI);
        assert_eq!(ev("2 * pi / 24"), std::f64::consts::PI / 12.0);
        // expit(x) = 1 / (1 + e^-x) and logit(p) = ln(p / (1 - p)), at points where both are
        // known exactly: expit(ln 3) = 3/4, logit(1/5) = -ln 4.
        assert!((ev("expit(log(b))") - 0.75).abs() < 1e-16);
        assert!((ev("logit(0.2)") + 4f64.ln()).abs() < 1e-15);
        assert_eq!(ev("expit(0)"), 0.5);
        assert_eq!(ev("logit(0.5)"), 0.0);
        assert_eq!(ev("expit(-800)"), 0.0);
        assert_eq!(ev("expit(800)"), 1.0);
        assert_eq!(ev("logit(0)"), f64::NEG_INFINITY);
        // 1 - expit(2) loses about three bits.
        assert!((ev("logit(expit(a))") - 2.0).abs() < 1e-14);
        let e = parse_expr_str("x", "pi(1)").unwrap_err();
        assert!(e.message.contains("unknown function 'pi'"), "{e}");
        let e = parse_expr_str("x", "gamma(1)").unwrap_err();
        assert!(
            e.message
                .contains("floor, ceil, trunc, mod, expit, logit, if"),
            "{e}"
        );
        let e = parse_expr_str("x", "logit(1, 2)").unwrap_err();
        assert!(e.message.contains("logit() takes 1 argument, got 2"), "{e}");
        assert!(check_population_name("pi").is_err());
        assert!(check_population_name("t").is_err());
        assert!(check_population_name("pie").is_ok());
    }

    /// tanh, atan, erf, erfc, phi, floor and ceil against values computed with mpmath at 30
    /// digits and rounded to f64.
    #[test]
    fn tanh_atan_erf_phi_floor_ceil() {
        let close = |text: &str, want: f64| {
            let got = ev(text);
            assert!(
                (got - want).abs() <= 2.0 * f64::EPSILON * want.abs(),
                "{text} = {got:e}, want {want:e}"
            );
        };
        close("tanh(1)", 0.761_594_155_955_764_9);
        close("tanh(-a)", -0.964_027_580_075_816_9);
        assert_eq!(ev("tanh(0)"), 0.0);
        assert_eq!(ev("tanh(800)"), 1.0);
        close("atan(1)", std::f64::consts::FRAC_PI_4);
        close("4 * atan(1) - pi", 0.0);
        assert_eq!(ev("atan(1e300)"), std::f64::consts::FRAC_PI_2);
        close("erf(1)", 0.842_700_792_949_714_9);
        close("erfc(1)", 0.157_299_207_050_285_1);
        close("erf(-1) + erfc(-1)", 1.0);
        assert_eq!(ev("erfc(30)"), 0.0);
        assert_eq!(ev("erfc(-30)"), 2.0);
        close("phi(-1)", 0.158_655_253_931_457_05);
        close("phi(1.959963984540054)", 0.975);
        assert_eq!(ev("phi(0)"), 0.5);
        // The lower tail keeps most of its relative accuracy: the rounding of −x/√2 costs
        // about x²·2⁻⁵³ (4e-15 at x = −10). Φ(−10) = 7.619853024160526e-24.
        assert!((ev("phi(-10)") / 7.619_853_024_160_526e-24 - 1.0).abs() < 1e-14);
        assert_eq!(ev("floor(-1.5) + ceil(-1.5)"), -3.0);
        assert_eq!(ev("floor(a) + ceil(a + 0.25)"), 5.0);
        let e = parse_expr_str("x", "erf(1, 2)").unwrap_err();
        assert!(e.message.contains("erf() takes 1 argument, got 2"), "{e}");
    }

    #[test]
    fn trunc_and_mod() {
        // Toward zero, where floor goes down.
        assert_eq!(ev("trunc(2.7) + 10 * trunc(-2.7)"), 2.0 - 20.0);
        assert_eq!(ev("trunc(-0.5)"), 0.0);
        assert!(ev("trunc(-0.5)").is_sign_negative());
        assert_eq!(ev("trunc(1e300)"), 1e300);
        assert!(ev("trunc(0 / 0)").is_nan());
        // The floored remainder has the sign of the divisor (R's %%, numpy's mod).
        assert_eq!(ev("mod(7, 3)"), 1.0);
        assert_eq!(ev("mod(-7, 3)"), 2.0);
        assert_eq!(ev("mod(7, -3)"), -2.0);
        assert_eq!(ev("mod(-7, -3)"), -1.0);
        assert_eq!(ev("mod(b, a)"), 1.0);
        assert_eq!(ev("mod(50.5, 24)"), 2.5);
        assert!(ev("mod(1, 0)").is_nan());
        assert!(ev("mod(1 / 0, 24)").is_nan());
        let e = parse_expr_str("x", "mod(7)").unwrap_err();
        assert!(e.message.contains("mod() takes 2 arguments, got 1"), "{e}");
    }

    #[test]
    fn every_function_name_is_reserved() {
        for f in Func::ALL {
            assert!(RESERVED.contains(&f.name()), "{}", f.name());
        }
    }

    #[test]
    fn errors_are_located() {
        let e = parse_expr_str("x", "1 +\n  foo(2)").unwrap_err();
        assert_eq!((e.line, e.col), (2, 3), "{e}");
        assert!(e.message.contains("unknown function 'foo'"));
        let e = parse_expr_str("x", "a < b < 3").unwrap_err();
        assert!(e.message.contains("chained"));
        let e = parse_expr_str("x", "max(1)").unwrap_err();
        assert!(e.message.contains("takes 2 arguments"));
        let e = parse_expr_str("x", "(1 + 2").unwrap_err();
        assert!(e.message.contains("unclosed '('"), "{e}");
        assert_eq!((e.line, e.col), (1, 1), "{e}");
        let e = parse_expr_str("x", "(1 + 2 3)").unwrap_err();
        assert!(e.message.contains("expected ')', found number 3"), "{e}");
        let e = parse_expr_str("x", "1 $ 2").unwrap_err();
        assert_eq!(e.col, 3);
        assert!(parse_expr_str("x", "1e999").is_err());
        let deep = "(".repeat(10_000) + "1" + &")".repeat(10_000);
        let e = parse_expr_str("x", &deep).unwrap_err();
        assert!(e.message.contains("nested more than 64 levels deep"), "{e}");
        assert_eq!((e.line, e.col), (1, 65), "{e}");
    }
}
