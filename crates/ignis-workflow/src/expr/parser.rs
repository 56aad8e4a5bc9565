//! Lexer and recursive-descent parser for GitHub's expression language.
//!
//! Lexing follows GitHub's rules: a token that is not an operator, bracket or string runs to
//! the next boundary character (whitespace, `( ) [ ] , . ! < > = & |`) and is then judged as
//! a whole, so `b@r` or `github/workflow` is one bad symbol, not a valid prefix plus junk.
//! Numbers may contain dots (`1.5`); a `.` directly after a name, `)`, `]` or `*` is a
//! dereference, elsewhere it starts a number (`.5`).
//!
//! Limits: GitHub's depth rule (at most 49 nested operations, where every `!`, comparison,
//! call, `.x`/`[i]`/`*` step counts one and a run of the same `&&`/`||` counts once) gives
//! the same "exceeded max expression depth 50" error; parentheses nest at most
//! [`MAX_NESTING`] deep; and the height of the tree (long `a || b || …` chains, which GitHub
//! flattens) at most [`MAX_HEIGHT`], so evaluating and dropping a parsed expression can
//! never exhaust the stack.

use super::ast::{Accessor, BinaryOp, Expr, ExprKind, Function, Span};
use super::error::ExprError;
use super::number::parse_number_text;

/// GitHub's maximum expression depth (an expression must stay below it).
pub const MAX_DEPTH: u32 = 50;
/// Maximum recursion of the parser (parentheses are not counted by GitHub's depth).
pub const MAX_NESTING: usize = 64;
/// Maximum height of the syntax tree.
pub const MAX_HEIGHT: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Star,
    Not,
    Ne,
    EqEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Number(f64),
    Str(String),
    Ident(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_boundary(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '.' | '!' | '<' | '>' | '=' | '&' | '|'
        )
}

fn is_legal_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Splits `src` into tokens; offsets are shifted by `base` (the position of `src` inside a
/// larger string such as a template).
fn lex(src: &str, base: usize) -> Result<Vec<Token>, ExprError> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut chars = src.char_indices().peekable();
    let err = |msg: String, at: usize| ExprError::new(base + at, msg);
    // The end of the run of non-boundary characters starting at `from`; `allow_dot` keeps
    // dots inside (numbers).
    let symbol_end = |from: usize, allow_dot: bool| -> usize {
        src[from..]
            .char_indices()
            .skip(1)
            .find(|&(_, c)| is_boundary(c) && !(allow_dot && c == '.'))
            .map_or(src.len(), |(i, _)| from + i)
    };
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let next = src[start + c.len_utf8()..].chars().next();
        let single = |tok| (tok, start + 1);
        let (tok, end) = match c {
            '(' => single(Tok::LParen),
            ')' => single(Tok::RParen),
            '[' => single(Tok::LBracket),
            ']' => single(Tok::RBracket),
            ',' => single(Tok::Comma),
            '*' => single(Tok::Star),
            '!' if next == Some('=') => (Tok::Ne, start + 2),
            '!' => single(Tok::Not),
            '<' if next == Some('=') => (Tok::Le, start + 2),
            '<' => single(Tok::Lt),
            '>' if next == Some('=') => (Tok::Ge, start + 2),
            '>' => single(Tok::Gt),
            '=' if next == Some('=') => (Tok::EqEq, start + 2),
            '&' if next == Some('&') => (Tok::And, start + 2),
            '|' if next == Some('|') => (Tok::Or, start + 2),
            '.' if matches!(
                tokens.last().map(|t| &t.tok),
                Some(Tok::Ident(_) | Tok::RParen | Tok::RBracket | Tok::Star)
            ) =>
            {
                single(Tok::Dot)
            }
            '\'' => {
                let mut value = String::new();
                let mut pos = start + 1;
                loop {
                    let Some(q) = src[pos..].find('\'') else {
                        return Err(err("unterminated string literal".to_owned(), start));
                    };
                    value.push_str(&src[pos..pos + q]);
                    pos += q + 1;
                    if src[pos..].starts_with('\'') {
                        value.push('\'');
                        pos += 1;
                    } else {
                        break;
                    }
                }
                (Tok::Str(value), pos)
            }
            c if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => {
                let end = symbol_end(start, true);
                let text = &src[start..end];
                match parse_number_text(text) {
                    Some(n) => (Tok::Number(n), end),
                    None => return Err(err(format!("unexpected symbol: '{text}'"), start)),
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = symbol_end(start, false);
                let text = &src[start..end];
                if !is_legal_identifier(text) {
                    return Err(err(format!("unexpected symbol: '{text}'"), start));
                }
                (Tok::Ident(text.to_owned()), end)
            }
            _ => {
                let end = symbol_end(start, false);
                let text = &src[start..end];
                return Err(err(format!("unexpected symbol: '{text}'"), start));
            }
        };
        tokens.push(Token {
            tok,
            start: base + start,
            end: base + end,
        });
        while chars.peek().is_some_and(|&(i, _)| i < end) {
            chars.next();
        }
    }
    Ok(tokens)
}

/// A node plus the height of its subtree and its depth by GitHub's rule.
struct Node {
    expr: Expr,
    height: u32,
    depth: u32,
}

/// GitHub's depth of an operand under a `&&`/`||` node: a same-operator child is merged into
/// its parent (GitHub's tree is n-ary there), so it does not add a level.
fn operand_depth(op: BinaryOp, side: &Node) -> u32 {
    match &side.expr.kind {
        ExprKind::Binary { op: inner, .. }
            if *inner == op && matches!(op, BinaryOp::And | BinaryOp::Or) =>
        {
            side.depth.saturating_sub(1)
        }
        _ => side.depth,
    }
}

fn check_depth(depth: u32, at: usize) -> Result<u32, ExprError> {
    if depth >= MAX_DEPTH {
        return Err(ExprError::new(
            at,
            format!("exceeded max expression depth {MAX_DEPTH}"),
        ));
    }
    Ok(depth)
}

struct Parser<'s> {
    src: &'s str,
    base: usize,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Parses `src` as one expression; spans are offsets into `src` shifted by `base`.
pub(crate) fn parse_at(src: &str, base: usize) -> Result<Expr, ExprError> {
    let tokens = lex(src, base)?;
    let mut p = Parser {
        src,
        base,
        tokens,
        pos: 0,
        depth: 0,
    };
    if p.tokens.is_empty() {
        return Err(ExprError::new(base, "an expression was expected"));
    }
    let node = p.parse_or()?;
    if let Some(t) = p.tokens.get(p.pos) {
        return Err(p.unexpected(t));
    }
    Ok(node.expr)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn text(&self, t: &Token) -> &str {
        self.src
            .get(t.start - self.base..t.end - self.base)
            .unwrap_or("")
    }

    fn unexpected(&self, t: &Token) -> ExprError {
        ExprError::new(t.start, format!("unexpected symbol: '{}'", self.text(t)))
    }

    fn eof(&self) -> ExprError {
        ExprError::new(self.base + self.src.len(), "unexpected end of expression")
    }

    /// Consumes the next token, which must be `want`.
    fn expect(&mut self, want: &Tok) -> Result<Token, ExprError> {
        match self.tokens.get(self.pos) {
            Some(t) if &t.tok == want => {
                self.pos += 1;
                Ok(t.clone())
            }
            Some(t) => Err(self.unexpected(t)),
            None => Err(self.eof()),
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ExprError::new(
                at,
                format!("expression nests more than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn binary(&self, op: BinaryOp, lhs: Node, rhs: Node) -> Result<Node, ExprError> {
        let height = lhs.height.max(rhs.height) + 1;
        if height > MAX_HEIGHT {
            return Err(ExprError::new(
                rhs.expr.span.start,
                format!("expression is too complex (more than {MAX_HEIGHT} levels)"),
            ));
        }
        let span = Span {
            start: lhs.expr.span.start,
            end: rhs.expr.span.end,
        };
        let depth = check_depth(
            operand_depth(op, &lhs).max(operand_depth(op, &rhs)) + 1,
            span.start,
        )?;
        Ok(Node {
            depth,
            expr: Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs.expr),
                    rhs: Box::new(rhs.expr),
                },
                span,
            },
            height,
        })
    }

    fn parse_or(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.parse_and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let rhs = self.parse_and()?;
            lhs = self.binary(BinaryOp::Or, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn parse_and(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.parse_eq()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let rhs = self.parse_eq()?;
            lhs = self.binary(BinaryOp::And, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn parse_eq(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.parse_rel()?;
        loop {
            let op = match self.peek() {
                Some(Tok::EqEq) => BinaryOp::Eq,
                Some(Tok::Ne) => BinaryOp::Ne,
                _ => return Ok(lhs),
            };
            self.pos += 1;
            let rhs = self.parse_rel()?;
            lhs = self.binary(op, lhs, rhs)?;
        }
    }

    fn parse_rel(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.parse_unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Lt) => BinaryOp::Lt,
                Some(Tok::Le) => BinaryOp::Le,
                Some(Tok::Gt) => BinaryOp::Gt,
                Some(Tok::Ge) => BinaryOp::Ge,
                _ => return Ok(lhs),
            };
            self.pos += 1;
            let rhs = self.parse_unary()?;
            lhs = self.binary(op, lhs, rhs)?;
        }
    }

    fn parse_unary(&mut self) -> Result<Node, ExprError> {
        let Some(t) = self.tokens.get(self.pos).cloned() else {
            return Err(self.eof());
        };
        if t.tok != Tok::Not {
            return self.parse_postfix();
        }
        self.pos += 1;
        self.enter(t.start)?;
        let operand = self.parse_unary()?;
        self.leave();
        let span = Span {
            start: t.start,
            end: operand.expr.span.end,
        };
        Ok(Node {
            depth: check_depth(operand.depth + 1, t.start)?,
            height: operand.height + 1,
            expr: Expr {
                kind: ExprKind::Not(Box::new(operand.expr)),
                span,
            },
        })
    }

    fn parse_postfix(&mut self) -> Result<Node, ExprError> {
        let base = self.parse_primary()?;
        let mut path = Vec::new();
        let mut height = base.height;
        let mut depth = base.depth;
        let mut end = base.expr.span.end;
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    let Some(t) = self.tokens.get(self.pos).cloned() else {
                        return Err(self.eof());
                    };
                    match t.tok {
                        Tok::Star => path.push(Accessor::Star),
                        Tok::Ident(name) => path.push(Accessor::Property(name)),
                        _ => return Err(self.unexpected(&t)),
                    }
                    self.pos += 1;
                    depth = check_depth(depth + 1, t.start)?;
                    end = t.end;
                }
                Some(Tok::LBracket) => {
                    let open = self.expect(&Tok::LBracket)?;
                    if self.peek() == Some(&Tok::Star) {
                        self.pos += 1;
                        path.push(Accessor::Star);
                        depth = check_depth(depth + 1, open.start)?;
                    } else {
                        self.enter(open.start)?;
                        let index = self.parse_or()?;
                        self.leave();
                        height = height.max(index.height + 1);
                        depth = check_depth(depth.max(index.depth) + 1, open.start)?;
                        path.push(Accessor::Index(index.expr));
                    }
                    end = self.expect(&Tok::RBracket)?.end;
                }
                _ => break,
            }
        }
        if path.is_empty() {
            return Ok(base);
        }
        let span = Span {
            start: base.expr.span.start,
            end,
        };
        Ok(Node {
            depth,
            height: height + 1,
            expr: Expr {
                kind: ExprKind::Access {
                    base: Box::new(base.expr),
                    path,
                },
                span,
            },
        })
    }

    fn parse_primary(&mut self) -> Result<Node, ExprError> {
        let Some(t) = self.tokens.get(self.pos).cloned() else {
            return Err(self.eof());
        };
        self.pos += 1;
        let span = Span {
            start: t.start,
            end: t.end,
        };
        let leaf = |kind| {
            Ok(Node {
                expr: Expr { kind, span },
                height: 1,
                depth: 0,
            })
        };
        match t.tok {
            Tok::Number(n) => leaf(ExprKind::Number(n)),
            Tok::Str(s) => leaf(ExprKind::String(s)),
            Tok::LParen => {
                self.enter(t.start)?;
                let inner = self.parse_or()?;
                self.leave();
                self.expect(&Tok::RParen)?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                if self.peek() == Some(&Tok::LParen) {
                    return self.parse_call(&name, t.start);
                }
                match name.as_str() {
                    "true" => leaf(ExprKind::Bool(true)),
                    "false" => leaf(ExprKind::Bool(false)),
                    "null" => leaf(ExprKind::Null),
                    "NaN" => leaf(ExprKind::Number(f64::NAN)),
                    "Infinity" => leaf(ExprKind::Number(f64::INFINITY)),
                    _ => leaf(ExprKind::Context(name)),
                }
            }
            _ => Err(self.unexpected(&t)),
        }
    }

    fn parse_call(&mut self, name: &str, start: usize) -> Result<Node, ExprError> {
        let Some(func) = Function::lookup(name) else {
            return Err(ExprError::new(
                start,
                format!("unrecognized function: '{name}'"),
            ));
        };
        self.expect(&Tok::LParen)?;
        self.enter(start)?;
        let mut args = Vec::new();
        let mut height = 1;
        let mut depth = 0;
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let arg = self.parse_or()?;
                height = height.max(arg.height + 1);
                depth = depth.max(arg.depth);
                args.push(arg.expr);
                match self.peek() {
                    Some(Tok::Comma) => self.pos += 1,
                    _ => break,
                }
            }
        }
        self.leave();
        let close = self.expect(&Tok::RParen)?;
        let (min, max) = func.arity();
        if args.len() < min {
            return Err(ExprError::new(
                start,
                format!("too few parameters supplied: '{name}'"),
            ));
        }
        if args.len() > max {
            return Err(ExprError::new(
                start,
                format!("too many parameters supplied: '{name}'"),
            ));
        }
        if func == Function::Case && args.len() % 2 == 0 {
            return Err(ExprError::new(
                start,
                "even number of parameters supplied, requires an odd number of parameters: 'case'",
            ));
        }
        Ok(Node {
            expr: Expr {
                kind: ExprKind::Call { func, args },
                span: Span {
                    start,
                    end: close.end,
                },
            },
            height,
            depth: check_depth(depth + 1, start)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Expr, ExprError> {
        parse_at(src, 0)
    }

    fn err(src: &str) -> ExprError {
        match parse(src) {
            Ok(e) => panic!("{src:?} parsed: {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn literals() {
        assert_eq!(parse("0xff").unwrap().kind, ExprKind::Number(255.0));
        assert_eq!(parse("-2.99e-2").unwrap().kind, ExprKind::Number(-0.0299));
        assert_eq!(parse(".5").unwrap().kind, ExprKind::Number(0.5));
        assert_eq!(
            parse("'it''s'").unwrap().kind,
            ExprKind::String("it's".into())
        );
        assert_eq!(
            parse("-Infinity").unwrap().kind,
            ExprKind::Number(f64::NEG_INFINITY)
        );
        assert!(matches!(parse("NaN").unwrap().kind, ExprKind::Number(n) if n.is_nan()));
    }

    #[test]
    fn syntax_errors_are_located() {
        let cases = [
            ("1 <", 3, "unexpected end of expression"),
            ("1 < )", 4, "unexpected symbol: ')'"),
            ("> 1", 0, "unexpected symbol: '>'"),
            ("github.()", 7, "unexpected symbol: '('"),
            ("1 2", 2, "unexpected symbol: '2'"),
            ("foo.1", 4, "unexpected symbol: '1'"),
            ("foo.b@r", 4, "unexpected symbol: 'b@r'"),
            ("1 = < 2", 2, "unexpected symbol: '='"),
            ("1 =2 =3", 2, "unexpected symbol: '=2'"),
            ("1 & < 2", 2, "unexpected symbol: '&'"),
            ("'foo", 0, "unterminated string literal"),
            (
                "github/workflow.md",
                0,
                "unexpected symbol: 'github/workflow'",
            ),
            (
                ".github/workflow",
                0,
                "unexpected symbol: '.github/workflow'",
            ),
            ("nonExistent()", 0, "unrecognized function: 'nonExistent'"),
            ("join()", 0, "too few parameters supplied: 'join'"),
            ("join(1, 2, 3)", 0, "too many parameters supplied: 'join'"),
            ("0x01p2", 0, "unexpected symbol: '0x01p2'"),
            ("-0xFF", 0, "unexpected symbol: '-0xFF'"),
            ("😊 x", 0, "unexpected symbol: '😊'"),
            ("", 0, "an expression was expected"),
            ("   ", 0, "an expression was expected"),
            ("(1", 2, "unexpected end of expression"),
        ];
        for (src, offset, msg) in cases {
            let e = err(src);
            assert_eq!((e.offset, e.message.as_str()), (offset, msg), "{src:?}");
        }
    }

    #[test]
    fn precedence() {
        // `!` binds tighter than `<`, which binds tighter than `==`, then `&&`, then `||`.
        let e = parse("!a < b == c && d || e").unwrap();
        let ExprKind::Binary { op, lhs, .. } = e.kind else {
            panic!()
        };
        assert_eq!(op, BinaryOp::Or);
        let ExprKind::Binary { op, lhs, .. } = lhs.kind else {
            panic!()
        };
        assert_eq!(op, BinaryOp::And);
        let ExprKind::Binary { op, lhs, .. } = lhs.kind else {
            panic!()
        };
        assert_eq!(op, BinaryOp::Eq);
        let ExprKind::Binary { op, lhs, .. } = lhs.kind else {
            panic!()
        };
        assert_eq!(op, BinaryOp::Lt);
        assert!(matches!(lhs.kind, ExprKind::Not(_)));
    }

    #[test]
    fn keywords_are_properties_after_dot() {
        let e = parse("foo.true.null['x'].*.format").unwrap();
        let ExprKind::Access { base, path } = e.kind else {
            panic!()
        };
        assert_eq!(base.kind, ExprKind::Context("foo".into()));
        assert_eq!(path.len(), 5);
        assert_eq!(path[0], Accessor::Property("true".into()));
        assert_eq!(path[3], Accessor::Star);
    }

    #[test]
    fn depth_and_height_limits() {
        // GitHub's rule: 49 nested operations are fine, 50 are not.
        let ok = format!("{}true", "!".repeat(49));
        assert!(parse(&ok).is_ok());
        let bad = format!("{}true", "!".repeat(50));
        assert_eq!(err(&bad).message, "exceeded max expression depth 50");
        let path = |n: usize| {
            format!(
                "foo{}",
                (1..=n).map(|i| format!("[{i}]")).collect::<String>()
            )
        };
        assert!(parse(&path(49)).is_ok());
        assert!(err(&path(50)).message.contains("depth 50"));
        let calls = |n: usize| format!("{}1{}", "fromjson(".repeat(n), ")".repeat(n));
        assert!(parse(&calls(49)).is_ok());
        assert!(err(&calls(50)).message.contains("depth 50"));
        // Parentheses are not operations, but recursion is still bounded.
        let parens = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        assert!(parse(&parens).is_ok());
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).message.contains("nests"));
        let chain = vec!["1"; 100].join(" || ");
        assert!(parse(&chain).is_ok());
        let long = vec!["1"; 5000].join(" || ");
        assert!(err(&long).message.contains("too complex"));
    }

    #[test]
    fn spans_cover_source() {
        let e = parse_at("a.b == 'x'", 10).unwrap();
        assert_eq!(e.span, Span { start: 10, end: 20 });
    }
}
