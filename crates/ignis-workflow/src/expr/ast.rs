//! The expression syntax tree. It owns its data (no borrowed source), so the workflow model
//! can store parsed expressions next to the YAML they came from.

use std::collections::BTreeSet;
use std::fmt;

/// A byte range `[start, end)` in the source the expression was parsed from (for a template,
/// the whole template string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A parsed expression node with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The node kinds of GitHub's expression language.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number literal (also `NaN`, `Infinity`, `-Infinity`, `0xff`, `1e3`).
    Number(f64),
    /// A string literal (`'it''s'` is stored unescaped: `it's`).
    String(String),
    /// A named value (context) such as `github` or `matrix`, as written.
    Context(String),
    /// A dereference chain on a base: `base.a[0].*`. A `*` turns the rest of the chain into
    /// an object filter that maps over every element.
    Access {
        /// What the chain starts from (a context, a call, a parenthesized expression…).
        base: Box<Expr>,
        /// The dereferences, left to right.
        path: Vec<Accessor>,
    },
    /// A function call; the name was checked and the arity validated at parse time.
    Call {
        /// Which function.
        func: Function,
        /// The arguments.
        args: Vec<Expr>,
    },
    /// `!operand`
    Not(Box<Expr>),
    /// A binary operator.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
}

/// One step of a dereference chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Accessor {
    /// `.name` (matched case-insensitively).
    Property(String),
    /// `[expr]`
    Index(Expr),
    /// `.*` or `[*]`
    Star,
}

/// Binary operators, loosest-binding last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&&` (returns an operand, not a boolean)
    And,
    /// `||` (returns an operand, not a boolean)
    Or,
}

impl BinaryOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        }
    }
}

/// The built-in functions. Names are case-insensitive in source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `contains(search, item)`
    Contains,
    /// `startsWith(search, prefix)`
    StartsWith,
    /// `endsWith(search, suffix)`
    EndsWith,
    /// `format(fmt, args...)`
    Format,
    /// `join(array, separator?)`
    Join,
    /// `toJSON(value)`
    ToJson,
    /// `fromJSON(string)`
    FromJson,
    /// `hashFiles(patterns...)`
    HashFiles,
    /// `case(pred, value, ..., default)`
    Case,
    /// `success()`
    Success,
    /// `failure()`
    Failure,
    /// `always()`
    Always,
    /// `cancelled()`
    Cancelled,
}

impl Function {
    /// Every function, for lookups.
    pub const ALL: [Function; 13] = [
        Function::Contains,
        Function::StartsWith,
        Function::EndsWith,
        Function::Format,
        Function::Join,
        Function::ToJson,
        Function::FromJson,
        Function::HashFiles,
        Function::Case,
        Function::Success,
        Function::Failure,
        Function::Always,
        Function::Cancelled,
    ];

    /// The canonical spelling from GitHub's documentation.
    pub fn name(self) -> &'static str {
        match self {
            Function::Contains => "contains",
            Function::StartsWith => "startsWith",
            Function::EndsWith => "endsWith",
            Function::Format => "format",
            Function::Join => "join",
            Function::ToJson => "toJSON",
            Function::FromJson => "fromJSON",
            Function::HashFiles => "hashFiles",
            Function::Case => "case",
            Function::Success => "success",
            Function::Failure => "failure",
            Function::Always => "always",
            Function::Cancelled => "cancelled",
        }
    }

    /// Looks a function up by name, ignoring case.
    pub fn lookup(name: &str) -> Option<Function> {
        Function::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Minimum and maximum argument counts.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Function::Contains | Function::StartsWith | Function::EndsWith => (2, 2),
            Function::Format | Function::HashFiles => (1, usize::MAX),
            Function::Join => (1, 2),
            Function::ToJson | Function::FromJson => (1, 1),
            Function::Case => (3, usize::MAX),
            Function::Success | Function::Failure | Function::Always | Function::Cancelled => {
                (0, 0)
            }
        }
    }

    /// Whether this is one of the job-status functions that only make sense in `if:`.
    pub fn is_status(self) -> bool {
        matches!(
            self,
            Function::Success | Function::Failure | Function::Always | Function::Cancelled
        )
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Expr {
    /// Calls `visit` on this node and every node below it (arguments, operands, indexes).
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Expr)) {
        visit(self);
        match &self.kind {
            ExprKind::Null
            | ExprKind::Bool(_)
            | ExprKind::Number(_)
            | ExprKind::String(_)
            | ExprKind::Context(_) => {}
            ExprKind::Access { base, path } => {
                base.walk(visit);
                for acc in path {
                    if let Accessor::Index(e) = acc {
                        e.walk(visit);
                    }
                }
            }
            ExprKind::Call { args, .. } => {
                for a in args {
                    a.walk(visit);
                }
            }
            ExprKind::Not(e) => e.walk(visit),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.walk(visit);
                rhs.walk(visit);
            }
        }
    }

    /// Whether `success()`, `failure()`, `always()` or `cancelled()` appears anywhere. An
    /// `if:` without one gets an implicit `success() &&`; outside `if:` they are invalid.
    pub fn uses_status_functions(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| {
            if let ExprKind::Call { func, .. } = &e.kind {
                found |= func.is_status();
            }
        });
        found
    }

    /// The functions called anywhere in the expression.
    pub fn functions(&self) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        self.walk(&mut |e| {
            if let ExprKind::Call { func, .. } = &e.kind {
                out.insert(func.name());
            }
        });
        out
    }

    /// The context names referenced anywhere, lower-cased (`needs`, `matrix`, …). The planner
    /// uses this to learn whether a matrix depends on `needs`; validation uses it to check
    /// which contexts a key may use.
    pub fn referenced_contexts(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(&mut |e| {
            if let ExprKind::Context(name) = &e.kind {
                out.insert(name.to_ascii_lowercase());
            }
        });
        out
    }

    /// Every context reference with its location, as written.
    pub fn context_references(&self) -> Vec<(&str, Span)> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let ExprKind::Context(name) = &e.kind {
                out.push((name.as_str(), e.span));
            }
        });
        out
    }
}
