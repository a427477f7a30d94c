//! SCIM filter expressions: the SCIM 1.1 grammar and the RFC 7644 §3.4.2.2 grammar, parsed into
//! one [`Filter`] tree and evaluated against resources as rendered for the client.
//!
//! Positions in [`FilterError`] are 0-based character (not byte) offsets into the filter text,
//! because they end up in messages read by people comparing them with what they typed.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};

/// Deep enough for any hand-written or generated filter seen in practice, shallow enough that
/// the recursive parser and evaluator stay far away from the end of a 2 MiB worker stack.
const MAX_DEPTH: usize = 64;

/// `and`/`or` chains are left-nested trees, so their length is also the tree depth that the
/// evaluator, `Drop` and `Debug` recurse through; this caps it.
const MAX_TERMS: usize = 1000;

/// Resources store core attributes at the top level, so a path qualified with one of these
/// names the top level rather than a nested object.
const CORE_URNS: [&str; 3] = [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:core:2.0:Group",
    "urn:scim:schemas:core:1.0",
];

const V1_OPERATORS: &str = "eq, co, sw, pr, gt, ge, lt, le";
const V2_OPERATORS: &str = "eq, ne, co, sw, ew, pr, gt, ge, lt, le";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SCIM 1.1 grammar.
    V1,
    /// RFC 7644 grammar.
    V2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub_attr: Option<String>,
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Value),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    /// SCIM 2.0 only.
    Not(Box<Filter>),
    /// SCIM 2.0 only: `emails[type eq "work"]`. The path never has a sub-attribute; the inner
    /// filter is evaluated with each element as the resource.
    ValuePath(AttrPath, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub message: String,
    /// 0-based character offset into the filter text.
    pub position: usize,
}

pub fn parse(input: &str, dialect: Dialect) -> Result<Filter, FilterError> {
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
        dialect,
        depth: 0,
        terms: 0,
    };
    parser.skip_ws();
    if parser.at_end() {
        return parser.fail(
            parser.pos,
            "empty filter; expected an expression such as userName eq \"bjensen\"".to_string(),
        );
    }
    let filter = parser.parse_or(Scope::Top)?;
    parser.skip_ws();
    let pos = parser.pos;
    match parser.peek() {
        None => Ok(filter),
        Some(')') => parser.fail(
            pos,
            format!("unbalanced parentheses: `)` at position {pos} has no matching `(`"),
        ),
        Some(']') => parser.fail(
            pos,
            format!("unbalanced brackets: `]` at position {pos} has no matching `[`"),
        ),
        Some(_) => parser.fail(
            pos,
            format!(
                "unexpected {} at position {pos}; expected `and`, `or` or the end of the filter",
                parser.describe(pos)
            ),
        ),
    }
}

/// Evaluates against a JSON resource (as rendered for the client). Attribute and sub-attribute
/// names match case-insensitively; an `urn` in the path selects the object stored under that
/// URN key (case-insensitive), except that the core schema URNs mean the top level.
/// `case_exact(path)` tells whether string comparison for that attribute is case-sensitive;
/// it receives the path that is actually compared: `emails.type` for `type` inside
/// `emails[...]`, and `emails.value` for a bare `emails eq "..."`.
pub fn matches(filter: &Filter, resource: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
    eval(filter, resource, None, case_exact)
}

/// Every attribute path the filter refers to, without duplicates (compared case-insensitively),
/// in order of first appearance. A value path contributes `attr` and `attr.sub` for each inner
/// path.
pub fn attribute_paths(filter: &Filter) -> Vec<AttrPath> {
    let mut out = Vec::new();
    collect_paths(filter, None, &mut out);
    out
}

/// If the whole filter is `<attr> eq "<string>"` (parentheses leave no trace in the tree),
/// returns the path and the value, so the caller can look one resource up instead of listing.
pub fn as_simple_equality(filter: &Filter) -> Option<(&AttrPath, &str)> {
    match filter {
        Filter::Compare(path, CompareOp::Eq, Value::String(value)) => Some((path, value)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Top,
    /// Inside `attr[...]`, where paths name sub-attributes of the element.
    ValueFilter,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    dialect: Dialect,
    depth: usize,
    terms: usize,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-' | '.' | ':')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-')
}

fn is_delimiter(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '"')
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !is_delimiter(c)
}

impl Parser {
    fn fail<T>(&self, position: usize, message: String) -> Result<T, FilterError> {
        Err(FilterError { message, position })
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn skip_ws_from(&self, mut pos: usize) -> usize {
        while self.peek_at(pos).is_some_and(char::is_whitespace) {
            pos += 1;
        }
        pos
    }

    fn skip_ws(&mut self) {
        self.pos = self.skip_ws_from(self.pos);
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Whether `word` (ASCII) is at `pos` as a whole word, in any case.
    fn word_at(&self, pos: usize, word: &str) -> bool {
        let mut at = pos;
        for expected in word.chars() {
            match self.peek_at(at) {
                Some(c) if c.eq_ignore_ascii_case(&expected) => at += 1,
                _ => return false,
            }
        }
        !self.peek_at(at).is_some_and(is_path_char)
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let at = self.skip_ws_from(self.pos);
        if self.word_at(at, word) {
            self.pos = at + word.len();
            true
        } else {
            false
        }
    }

    fn describe(&self, pos: usize) -> String {
        match self.peek_at(pos) {
            None => "the end of the filter".to_string(),
            Some(c) if is_delimiter(c) => format!("`{c}`"),
            Some(_) => {
                let word: String = self.chars[pos..]
                    .iter()
                    .take_while(|c| is_word_char(**c))
                    .take(32)
                    .collect();
                format!("\"{word}\"")
            }
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        if self.depth >= MAX_DEPTH {
            return self.fail(
                at,
                format!(
                    "filter nests deeper than {MAX_DEPTH} levels of parentheses or brackets at position {at}"
                ),
            );
        }
        self.depth += 1;
        Ok(())
    }

    fn parse_or(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_and(scope)?;
        while self.eat_keyword("or") {
            let right = self.parse_and(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary(scope)?;
        while self.eat_keyword("and") {
            let right = self.parse_unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => self.fail(
                start,
                format!("expected an expression at position {start}, but the filter ends there"),
            ),
            Some('(') => self.parse_group(scope),
            Some(c @ (')' | ']' | '[')) => self.fail(
                start,
                format!("expected an expression at position {start}, found `{c}`"),
            ),
            Some('"') => self.fail(
                start,
                format!("expected an attribute name at position {start}, found a quoted string"),
            ),
            Some(_) if self.word_at(start, "not") => self.parse_not(scope),
            Some(_) => self.parse_attr_expr(scope),
        }
    }

    fn parse_not(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let start = self.pos;
        let after = self.skip_ws_from(start + 3);
        if self.peek_at(after) != Some('(') && self.operator_word_at(after) {
            // An attribute that happens to be called "not", as in `not pr`.
            return self.parse_attr_expr(scope);
        }
        if self.dialect == Dialect::V1 {
            return self.fail(
                start,
                format!(
                    "`not` at position {start} is SCIM 2.0 only; SCIM 1.1 filters support and, or and parentheses"
                ),
            );
        }
        if self.peek_at(after) != Some('(') {
            return self.fail(
                start,
                format!(
                    "`not` at position {start} must be followed by a parenthesised filter, e.g. not (active eq true)"
                ),
            );
        }
        self.pos = after;
        let inner = self.parse_group(scope)?;
        Ok(Filter::Not(Box::new(inner)))
    }

    fn operator_word_at(&self, pos: usize) -> bool {
        ["eq", "ne", "co", "sw", "ew", "pr", "gt", "ge", "lt", "le"]
            .iter()
            .any(|op| self.word_at(pos, op))
    }

    fn parse_group(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let open = self.pos;
        self.enter(open)?;
        self.pos += 1;
        let inner = self.parse_or(scope)?;
        self.skip_ws();
        let pos = self.pos;
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(inner)
            }
            None => self.fail(
                open,
                format!("unbalanced parentheses: `(` at position {open} is never closed"),
            ),
            Some(_) => self.fail(
                pos,
                format!(
                    "unexpected {} at position {pos}; expected `and`, `or` or `)`",
                    self.describe(pos)
                ),
            ),
        }
    }

    fn parse_attr_expr(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let start = self.pos;
        let path = self.parse_attr_path()?;
        if self.peek() == Some('[') {
            return self.parse_value_path(path, scope);
        }
        if scope == Scope::ValueFilter && (path.urn.is_some() || path.sub_attr.is_some()) {
            return self.fail(
                start,
                format!(
                    "`{path}` at position {start} is inside a value filter, where only sub-attribute names such as type or value are allowed"
                ),
            );
        }
        self.parse_condition(path)
    }

    fn parse_value_path(&mut self, path: AttrPath, scope: Scope) -> Result<Filter, FilterError> {
        let open = self.pos;
        if self.dialect == Dialect::V1 {
            return self.fail(
                open,
                format!(
                    "value filter `{path}[...]` at position {open} is SCIM 2.0 only; SCIM 1.1 filters use {path}.subAttribute"
                ),
            );
        }
        if scope == Scope::ValueFilter {
            return self.fail(
                open,
                format!("value filters cannot be nested: `[` at position {open} is inside another value filter"),
            );
        }
        if path.sub_attr.is_some() {
            return self.fail(
                open,
                format!(
                    "`[` at position {open} must follow a multi-valued attribute, not the sub-attribute `{path}`"
                ),
            );
        }
        self.enter(open)?;
        self.pos += 1;
        let mut inner = self.parse_or(Scope::ValueFilter)?;
        self.skip_ws();
        let pos = self.pos;
        match self.peek() {
            Some(']') => self.pos += 1,
            None => {
                return self.fail(
                    open,
                    format!("unbalanced brackets: `[` at position {open} is never closed"),
                )
            }
            Some(_) => {
                return self.fail(
                    pos,
                    format!(
                        "unexpected {} at position {pos}; expected `and`, `or` or `]`",
                        self.describe(pos)
                    ),
                )
            }
        }
        self.depth -= 1;
        if self.peek() == Some('.') {
            // Entra sends `emails[type eq "work"].value eq "x"`, outside the RFC grammar; it
            // selects the same element as `emails[type eq "work" and value eq "x"]`.
            self.pos += 1;
            let name_start = self.pos;
            let sub = self.take_while(is_name_char);
            validate_name(self, &sub, name_start)?;
            let condition = self.parse_condition(AttrPath {
                urn: None,
                attr: sub,
                sub_attr: None,
            })?;
            inner = Filter::And(Box::new(inner), Box::new(condition));
        }
        Ok(Filter::ValuePath(path, Box::new(inner)))
    }

    fn parse_attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        let raw = self.take_while(is_path_char);
        if raw.is_empty() {
            return self.fail(
                start,
                format!(
                    "expected an attribute name at position {start}, found {}",
                    self.describe(start)
                ),
            );
        }
        // `raw` is ASCII, so byte offsets within it are character offsets too.
        let Some(colon) = raw.rfind(':') else {
            return split_attr(self, &raw, start, None);
        };
        if self.dialect == Dialect::V1 {
            return self.fail(
                start,
                format!(
                    "URN-qualified attribute path \"{raw}\" at position {start} is SCIM 2.0 only; SCIM 1.1 filters use plain attribute names"
                ),
            );
        }
        let urn = &raw[..colon];
        let rest = &raw[colon + 1..];
        if urn.is_empty() {
            return self.fail(
                start,
                format!("attribute path \"{raw}\" at position {start} has an empty URN before `:`"),
            );
        }
        if rest.is_empty() {
            let end = start + raw.len();
            return self.fail(
                end,
                format!("missing attribute name at position {end} after the URN \"{urn}\""),
            );
        }
        split_attr(self, rest, start + colon + 1, Some(urn.to_string()))
    }

    fn parse_condition(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return self.fail(
                self.pos,
                format!("filter has more than {MAX_TERMS} conditions"),
            );
        }
        let allowed = match self.dialect {
            Dialect::V1 => V1_OPERATORS,
            Dialect::V2 => V2_OPERATORS,
        };
        self.skip_ws();
        let op_start = self.pos;
        let word = self.take_while(is_word_char);
        if word.is_empty() {
            return self.fail(
                op_start,
                format!(
                    "expected an operator after `{path}` at position {op_start}, found {}; expected one of {allowed}",
                    self.describe(op_start)
                ),
            );
        }
        let op = match word.to_ascii_lowercase().as_str() {
            "pr" => None,
            "eq" => Some(CompareOp::Eq),
            "ne" => Some(CompareOp::Ne),
            "co" => Some(CompareOp::Co),
            "sw" => Some(CompareOp::Sw),
            "ew" => Some(CompareOp::Ew),
            "gt" => Some(CompareOp::Gt),
            "ge" => Some(CompareOp::Ge),
            "lt" => Some(CompareOp::Lt),
            "le" => Some(CompareOp::Le),
            _ => {
                return self.fail(
                    op_start,
                    format!(
                    "unknown operator \"{word}\" at position {op_start}; expected one of {allowed}"
                ),
                )
            }
        };
        if self.dialect == Dialect::V1 && matches!(op, Some(CompareOp::Ne | CompareOp::Ew)) {
            return self.fail(
                op_start,
                format!(
                    "operator \"{word}\" at position {op_start} is SCIM 2.0 only; SCIM 1.1 supports {V1_OPERATORS}"
                ),
            );
        }
        let Some(op) = op else {
            let after = self.skip_ws_from(self.pos);
            if self
                .peek_at(after)
                .is_some_and(|c| c == '"' || c == '-' || c.is_ascii_digit())
            {
                return self.fail(
                    after,
                    format!(
                        "operator \"pr\" takes no value, but a value follows at position {after}"
                    ),
                );
            }
            return Ok(Filter::Present(path));
        };
        self.skip_ws();
        let value_start = self.pos;
        let value = self.parse_value(&word)?;
        if op.is_ordering() {
            let what = match value {
                Value::Bool(_) => Some("booleans"),
                Value::Null => Some("null"),
                _ => None,
            };
            if let Some(what) = what {
                return self.fail(
                    value_start,
                    format!(
                        "cannot order {what}: operator \"{word}\" needs a string or number value, found {value} at position {value_start}"
                    ),
                );
            }
        }
        if op.is_substring() && !value.is_string() {
            return self.fail(
                value_start,
                format!(
                    "operator \"{word}\" at position {op_start} compares strings, but the value at position {value_start} is not a string"
                ),
            );
        }
        Ok(Filter::Compare(path, op, value))
    }

    fn parse_value(&mut self, op_word: &str) -> Result<Value, FilterError> {
        let start = self.pos;
        match self.peek() {
            None => self.fail(
                start,
                format!("missing value after operator \"{op_word}\" at position {start}"),
            ),
            Some('"') => self.parse_string().map(Value::String),
            Some(c @ ('(' | ')' | '[' | ']')) => self.fail(
                start,
                format!(
                    "missing value after operator \"{op_word}\": found `{c}` at position {start}"
                ),
            ),
            Some(first) => {
                let word = self.take_while(is_word_char);
                match word.to_ascii_lowercase().as_str() {
                    "true" => return Ok(Value::Bool(true)),
                    "false" => return Ok(Value::Bool(false)),
                    "null" => return Ok(Value::Null),
                    "and" | "or" => {
                        return self.fail(
                            start,
                            format!(
                                "missing value after operator \"{op_word}\": found \"{word}\" at position {start}"
                            ),
                        )
                    }
                    _ => {}
                }
                if first == '-' || first.is_ascii_digit() {
                    if let Ok(number @ Value::Number(_)) = serde_json::from_str::<Value>(&word) {
                        return Ok(number);
                    }
                }
                // Unquoted words are not JSON, but Entra documents `externalId eq jyoung`;
                // words that merely look numeric (`0123`, a GUID) are kept as strings too.
                Ok(Value::String(word))
            }
        }
    }

    fn parse_string(&mut self) -> Result<String, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return self.fail(
                    open,
                    format!("unterminated string: the quote at position {open} is never closed"),
                );
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let escaped = self.parse_escape(self.pos - 1, open)?;
                    out.push(escaped);
                }
                other => out.push(other),
            }
        }
    }

    fn parse_escape(&mut self, at: usize, open: usize) -> Result<char, FilterError> {
        let Some(c) = self.peek() else {
            return self.fail(
                open,
                format!("unterminated string: the quote at position {open} is never closed"),
            );
        };
        self.pos += 1;
        let decoded = match c {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.parse_unicode_escape(at),
            other => {
                return self.fail(
                    at,
                    format!(
                        "invalid escape `\\{other}` at position {at}; strings allow \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX"
                    ),
                )
            }
        };
        Ok(decoded)
    }

    fn parse_unicode_escape(&mut self, at: usize) -> Result<char, FilterError> {
        let high = self.hex4(at)?;
        let code = match high {
            0xD800..=0xDBFF => {
                if self.peek() != Some('\\') || self.peek_at(self.pos + 1) != Some('u') {
                    return self.fail(
                        at,
                        format!("unpaired surrogate \\u{high:04x} at position {at}"),
                    );
                }
                let low_at = self.pos;
                self.pos += 2;
                let low = self.hex4(low_at)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return self.fail(
                        at,
                        format!("unpaired surrogate \\u{high:04x} at position {at}"),
                    );
                }
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return self.fail(
                    at,
                    format!("unpaired surrogate \\u{high:04x} at position {at}"),
                )
            }
            other => other,
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => self.fail(at, format!("invalid \\u escape at position {at}")),
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, FilterError> {
        let mut code = 0;
        for _ in 0..4 {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                return self.fail(
                    at,
                    format!("invalid \\u escape at position {at}; expected four hex digits"),
                );
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}

/// Splits `attr[.sub]` (already known to hold only path characters) and validates both names.
fn split_attr(
    parser: &Parser,
    text: &str,
    at: usize,
    urn: Option<String>,
) -> Result<AttrPath, FilterError> {
    let mut parts = text.split('.');
    let attr = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() {
        return parser.fail(
            at,
            format!(
                "attribute path \"{text}\" at position {at} has more than one sub-attribute; use attribute or attribute.subAttribute"
            ),
        );
    }
    validate_name(parser, attr, at)?;
    if let Some(sub) = sub {
        validate_name(parser, sub, at + attr.len() + 1)?;
    }
    Ok(AttrPath {
        urn,
        attr: attr.to_string(),
        sub_attr: sub.map(str::to_string),
    })
}

fn validate_name(parser: &Parser, name: &str, at: usize) -> Result<(), FilterError> {
    if name.is_empty() {
        return parser.fail(
            at,
            format!(
                "missing attribute name at position {at}, found {}",
                parser.describe(at)
            ),
        );
    }
    if name.eq_ignore_ascii_case("$ref") || name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Ok(());
    }
    parser.fail(
        at,
        format!("invalid attribute name \"{name}\" at position {at}; names start with a letter"),
    )
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn eval(
    filter: &Filter,
    resource: &Value,
    parent: Option<&AttrPath>,
    case_exact: &dyn Fn(&AttrPath) -> bool,
) -> bool {
    match filter {
        Filter::And(a, b) => {
            eval(a, resource, parent, case_exact) && eval(b, resource, parent, case_exact)
        }
        Filter::Or(a, b) => {
            eval(a, resource, parent, case_exact) || eval(b, resource, parent, case_exact)
        }
        Filter::Not(inner) => !eval(inner, resource, parent, case_exact),
        Filter::Present(path) => lookup(resource, path).is_some_and(|value| match &path.sub_attr {
            None => is_present(value, 0),
            Some(sub) => sub_values(value, sub).into_iter().any(|v| is_present(v, 0)),
        }),
        Filter::Compare(path, op, literal) => {
            compare(resource, path, *op, literal, parent, case_exact)
        }
        Filter::ValuePath(path, inner) => match lookup(resource, path) {
            Some(Value::Array(items)) => items
                .iter()
                .any(|item| item.is_object() && eval(inner, item, Some(path), case_exact)),
            Some(item @ Value::Object(_)) => eval(inner, item, Some(path), case_exact),
            _ => false,
        },
    }
}

fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The value of `path.attr`, after descending into the extension object named by the URN.
fn lookup<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    let mut container = resource.as_object()?;
    if let Some(urn) = &path.urn {
        if !CORE_URNS.iter().any(|core| core.eq_ignore_ascii_case(urn)) {
            container = get_ci(container, urn)?.as_object()?;
        }
    }
    get_ci(container, &path.attr)
}

fn sub_values<'a>(value: &'a Value, sub: &str) -> Vec<&'a Value> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_object().and_then(|o| get_ci(o, sub)))
            .collect(),
        Value::Object(o) => get_ci(o, sub).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Present means "has content": SCIM 1.1 counts a complex value as present only when one of
/// its sub-attributes is. The depth cap keeps a pathological resource from recursing far.
fn is_present(value: &Value, depth: usize) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(|v| depth >= 8 || is_present(v, depth + 1)),
        Value::Object(map) => map.values().any(|v| depth >= 8 || is_present(v, depth + 1)),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn compare(
    resource: &Value,
    path: &AttrPath,
    op: CompareOp,
    literal: &Value,
    parent: Option<&AttrPath>,
    case_exact: &dyn Fn(&AttrPath) -> bool,
) -> bool {
    // `ne` is the negation of `eq` so that `a ne x` and `not (a eq x)` agree, including on
    // absent attributes and on multi-valued ones (no element equals x).
    if op == CompareOp::Ne {
        return !compare(resource, path, CompareOp::Eq, literal, parent, case_exact);
    }
    let Some(value) = lookup(resource, path) else {
        return op == CompareOp::Eq && literal.is_null();
    };
    let mut implied_value = false;
    let candidates: Vec<&Value> = match &path.sub_attr {
        Some(sub) => sub_values(value, sub),
        // A bare complex or multi-valued attribute compares its `value` sub-attribute: the
        // SCIM 1.1 spec's `emails co "example.com"`, Ping's `emails eq`, Entra's `manager eq`.
        None => match value {
            Value::Array(items) => items
                .iter()
                .filter_map(|item| match item {
                    Value::Object(o) => {
                        implied_value = true;
                        get_ci(o, "value")
                    }
                    other => Some(other),
                })
                .collect(),
            Value::Object(o) => {
                implied_value = true;
                get_ci(o, "value").into_iter().collect()
            }
            other => vec![other],
        },
    };
    if literal.is_null() {
        return op == CompareOp::Eq && candidates.iter().all(|c| c.is_null());
    }
    let exact = literal.is_string() && {
        let effective = match parent {
            Some(parent) => Cow::Owned(AttrPath {
                urn: parent.urn.clone(),
                attr: parent.attr.clone(),
                sub_attr: Some(path.attr.clone()),
            }),
            None if implied_value => Cow::Owned(AttrPath {
                urn: path.urn.clone(),
                attr: path.attr.clone(),
                sub_attr: Some("value".to_string()),
            }),
            None => Cow::Borrowed(path),
        };
        case_exact(&effective)
    };
    candidates
        .into_iter()
        .any(|candidate| compare_value(candidate, op, literal, exact))
}

fn compare_value(candidate: &Value, op: CompareOp, literal: &Value, exact: bool) -> bool {
    match (candidate, literal) {
        (Value::Array(items), _) => items
            .iter()
            .any(|item| !item.is_array() && compare_value(item, op, literal, exact)),
        (Value::String(have), Value::String(want)) => compare_strings(have, op, want, exact),
        (Value::Bool(have), Value::Bool(want)) => op == CompareOp::Eq && have == want,
        // Entra stores and sends booleans as "True"/"False" strings.
        (Value::String(have), Value::Bool(want)) => {
            op == CompareOp::Eq && parse_bool(have) == Some(*want)
        }
        (Value::Bool(have), Value::String(want)) => {
            op == CompareOp::Eq && parse_bool(want) == Some(*have)
        }
        (Value::Number(have), Value::Number(want)) => {
            compare_numbers(have, want).is_some_and(|ord| ordering_satisfies(op, ord))
        }
        _ => false,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn compare_strings(have: &str, op: CompareOp, want: &str, exact: bool) -> bool {
    // Timestamps compare as instants: `...:34.500Z` is after `...:34Z`, and offsets count,
    // which neither holds for their text.
    if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
        use crate::provisioning::audit::millis_from_rfc3339;
        if let (Some(a), Some(b)) = (millis_from_rfc3339(have), millis_from_rfc3339(want)) {
            return ordering_satisfies(op, a.cmp(&b));
        }
    }
    let (have, want) = if exact {
        (Cow::Borrowed(have), Cow::Borrowed(want))
    } else {
        (
            Cow::Owned(have.to_lowercase()),
            Cow::Owned(want.to_lowercase()),
        )
    };
    match op {
        CompareOp::Eq => have == want,
        CompareOp::Ne => have != want,
        CompareOp::Co => have.contains(want.as_ref()),
        CompareOp::Sw => have.starts_with(want.as_ref()),
        CompareOp::Ew => have.ends_with(want.as_ref()),
        CompareOp::Gt => have > want,
        CompareOp::Ge => have >= want,
        CompareOp::Lt => have < want,
        CompareOp::Le => have <= want,
    }
}

fn compare_numbers(have: &Number, want: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (have.as_i64(), want.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (have.as_u64(), want.as_u64()) {
        return Some(a.cmp(&b));
    }
    have.as_f64()?.partial_cmp(&want.as_f64()?)
}

fn ordering_satisfies(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Path collection

fn collect_paths(filter: &Filter, parent: Option<&AttrPath>, out: &mut Vec<AttrPath>) {
    match filter {
        Filter::And(a, b) | Filter::Or(a, b) => {
            collect_paths(a, parent, out);
            collect_paths(b, parent, out);
        }
        Filter::Not(inner) => collect_paths(inner, parent, out),
        Filter::Present(path) | Filter::Compare(path, _, _) => {
            let path = match parent {
                Some(parent) => AttrPath {
                    urn: parent.urn.clone(),
                    attr: parent.attr.clone(),
                    sub_attr: Some(path.attr.clone()),
                },
                None => path.clone(),
            };
            push_unique(out, path);
        }
        Filter::ValuePath(path, inner) => {
            push_unique(
                out,
                AttrPath {
                    sub_attr: None,
                    ..path.clone()
                },
            );
            collect_paths(inner, Some(path), out);
        }
    }
}

fn same_path(a: &AttrPath, b: &AttrPath) -> bool {
    fn same(a: Option<&String>, b: Option<&String>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
    a.attr.eq_ignore_ascii_case(&b.attr)
        && same(a.urn.as_ref(), b.urn.as_ref())
        && same(a.sub_attr.as_ref(), b.sub_attr.as_ref())
}

fn push_unique(out: &mut Vec<AttrPath>, path: AttrPath) {
    if !out.iter().any(|p| same_path(p, &path)) {
        out.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

    fn p1(input: &str) -> Filter {
        parse(input, Dialect::V1).unwrap()
    }

    fn p2(input: &str) -> Filter {
        parse(input, Dialect::V2).unwrap()
    }

    fn e1(input: &str) -> FilterError {
        parse(input, Dialect::V1).unwrap_err()
    }

    fn e2(input: &str) -> FilterError {
        parse(input, Dialect::V2).unwrap_err()
    }

    fn attr(name: &str) -> AttrPath {
        AttrPath {
            urn: None,
            attr: name.to_string(),
            sub_attr: None,
        }
    }

    fn sub(name: &str, sub: &str) -> AttrPath {
        AttrPath {
            urn: None,
            attr: name.to_string(),
            sub_attr: Some(sub.to_string()),
        }
    }

    fn urn(urn: &str, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: Some(urn.to_string()),
            attr: name.to_string(),
            sub_attr: sub.map(str::to_string),
        }
    }

    fn cmp(path: AttrPath, op: CompareOp, value: Value) -> Filter {
        Filter::Compare(path, op, value)
    }

    fn eq(name: &str, value: Value) -> Filter {
        cmp(attr(name), CompareOp::Eq, value)
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }

    fn vp(name: &str, inner: Filter) -> Filter {
        Filter::ValuePath(attr(name), Box::new(inner))
    }

    fn user() -> Value {
        json!({
            "schemas": [CORE_USER, ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "BJensen-Ext",
            "userName": "bjensen@example.com",
            "userType": "Employee",
            "name": {
                "formatted": "Ms. Barbara J Jensen III",
                "familyName": "O'Malley",
                "givenName": "Barbara"
            },
            "displayName": "Babs Jensen",
            "nickName": null,
            "title": "",
            "active": true,
            "loginCount": 42,
            "score": 2.5,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "phoneNumbers": [],
            "groups": [{"value": "e9e30dba", "display": "Tour Guides"}],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z"
            },
            ENTERPRISE: {
                "employeeNumber": "701984",
                "costCenter": "4130",
                "manager": {"value": "26118915", "displayName": "John Smith"}
            }
        })
    }

    fn ids_exact(path: &AttrPath) -> bool {
        path.sub_attr.is_none()
            && (path.attr.eq_ignore_ascii_case("id")
                || path.attr.eq_ignore_ascii_case("externalId"))
    }

    fn m2(input: &str, resource: &Value) -> bool {
        matches(&p2(input), resource, &ids_exact)
    }

    fn m1(input: &str, resource: &Value) -> bool {
        matches(&p1(input), resource, &ids_exact)
    }

    // ----- parsing: operators -------------------------------------------------------------

    #[test]
    fn every_operator_in_v2() {
        let ops = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        for (word, op) in ops {
            assert_eq!(
                p2(&format!("userName {word} \"x\"")),
                cmp(attr("userName"), op, json!("x")),
                "{word}"
            );
            assert_eq!(op.as_str(), word);
        }
        assert_eq!(p2("title pr"), Filter::Present(attr("title")));
    }

    #[test]
    fn every_operator_in_v1() {
        let ops = [
            ("eq", CompareOp::Eq),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        for (word, op) in ops {
            assert_eq!(
                p1(&format!("userName {word} \"x\"")),
                cmp(attr("userName"), op, json!("x")),
                "{word}"
            );
        }
        assert_eq!(p1("title pr"), Filter::Present(attr("title")));
        assert_eq!(
            p1("meta.lastModified gt \"2011-05-13T04:42:34Z\""),
            cmp(
                sub("meta", "lastModified"),
                CompareOp::Gt,
                json!("2011-05-13T04:42:34Z")
            )
        );
    }

    #[test]
    fn v1_refuses_scim2_constructs() {
        for (input, position, needle) in [
            ("userName ne \"x\"", 9, "operator \"ne\""),
            ("userName ew \"x\"", 9, "operator \"ew\""),
            ("not (userName eq \"x\")", 0, "`not`"),
            ("emails[type eq \"work\"]", 6, "value filter `emails[...]`"),
            ("emails[type eq \"work\"].value eq \"x\"", 6, "value filter"),
            (
                "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\"",
                0,
                "URN-qualified",
            ),
        ] {
            let err = e1(input);
            assert_eq!(err.position, position, "{input}: {err}");
            assert!(err.message.contains(needle), "{input}: {err}");
            assert!(err.message.contains("SCIM 2.0 only"), "{input}: {err}");
            assert!(parse(input, Dialect::V2).is_ok(), "{input}");
        }
        let err = e1("not userName eq \"x\"");
        assert!(err.message.contains("SCIM 2.0 only"), "{err}");
    }

    #[test]
    fn unknown_operator_message_lists_the_dialects_operators() {
        let err = e1("userName eqq \"x\"");
        assert_eq!(
            err.message,
            "unknown operator \"eqq\" at position 9; expected one of eq, co, sw, pr, gt, ge, lt, le"
        );
        assert_eq!(err.position, 9);
        assert_eq!(err.to_string(), err.message);
        let err = e2("userName eqq \"x\"");
        assert!(err
            .message
            .ends_with("eq, ne, co, sw, ew, pr, gt, ge, lt, le"));
    }

    // ----- parsing: structure -------------------------------------------------------------

    #[test]
    fn precedence_and_associativity() {
        let (a, b, c) = (eq("a", json!(1)), eq("b", json!(2)), eq("c", json!(3)));
        for parse_fn in [p1, p2] {
            assert_eq!(
                parse_fn("a eq 1 or b eq 2 and c eq 3"),
                or(a.clone(), and(b.clone(), c.clone()))
            );
            assert_eq!(
                parse_fn("a eq 1 and b eq 2 or c eq 3"),
                or(and(a.clone(), b.clone()), c.clone())
            );
            assert_eq!(
                parse_fn("a eq 1 or b eq 2 or c eq 3"),
                or(or(a.clone(), b.clone()), c.clone())
            );
            assert_eq!(
                parse_fn("a eq 1 and b eq 2 and c eq 3"),
                and(and(a.clone(), b.clone()), c.clone())
            );
            assert_eq!(
                parse_fn("(a eq 1 or b eq 2) and c eq 3"),
                and(or(a.clone(), b.clone()), c.clone())
            );
            assert_eq!(
                parse_fn("((a eq 1))"),
                a.clone(),
                "redundant parentheses leave no trace"
            );
            assert_eq!(parse_fn("a eq 1 and(b eq 2)"), and(a.clone(), b.clone()));
        }
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let (a, b) = (eq("a", json!(1)), eq("b", json!(2)));
        assert_eq!(
            p2("not (a eq 1) and b eq 2"),
            and(not(a.clone()), b.clone())
        );
        assert_eq!(p2("not(a eq 1)"), not(a.clone()));
        assert_eq!(
            p2("b eq 2 or NOT ( a eq 1 or b eq 2 )"),
            or(b.clone(), not(or(a.clone(), b.clone())))
        );
        assert_eq!(p2("not (not (a eq 1))"), not(not(a.clone())));
        // An attribute that is called "not".
        assert_eq!(p2("not pr"), Filter::Present(attr("not")));
        assert_eq!(p1("not eq \"x\""), eq("not", json!("x")));
    }

    #[test]
    fn keywords_are_case_insensitive_and_names_keep_their_case() {
        assert_eq!(
            p2("UserName EQ \"x\" AND Title Pr OR not (a Eq 1)"),
            or(
                and(eq("UserName", json!("x")), Filter::Present(attr("Title"))),
                not(eq("a", json!(1)))
            )
        );
        assert_eq!(
            p1("username Eq \"x\" aNd NAME.FamilyName sw \"J\""),
            and(
                eq("username", json!("x")),
                cmp(sub("NAME", "FamilyName"), CompareOp::Sw, json!("J"))
            )
        );
    }

    #[test]
    fn whitespace_is_flexible() {
        assert_eq!(
            p2(" \t userName \t eq\t\t\"x\"   and  title   pr \t "),
            and(eq("userName", json!("x")), Filter::Present(attr("title")))
        );
        assert_eq!(p2("userName eq\"x\""), eq("userName", json!("x")));
    }

    #[test]
    fn names_with_dollar_dash_and_underscore() {
        assert_eq!(
            p2("members.$ref eq \"https://x/Users/1\""),
            cmp(
                sub("members", "$ref"),
                CompareOp::Eq,
                json!("https://x/Users/1")
            )
        );
        assert_eq!(p2("$ref pr"), Filter::Present(attr("$ref")));
        assert_eq!(
            p2("x-custom_attr1 pr"),
            Filter::Present(attr("x-custom_attr1"))
        );
        assert_eq!(
            p2("manager[$ref pr]"),
            vp("manager", Filter::Present(attr("$ref")))
        );
    }

    // ----- parsing: values ----------------------------------------------------------------

    #[test]
    fn string_escapes_and_unicode() {
        assert_eq!(
            p2(r#"a eq "say \"hi\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00""#),
            eq("a", json!("say \"hi\" \\ / \u{8}\u{c}\n\r\t é 😀"))
        );
        assert_eq!(
            p1("displayName eq \"Zoë 日本 😀\""),
            eq("displayName", json!("Zoë 日本 😀"))
        );
        assert_eq!(
            p1("name.familyName co \"O'Malley\""),
            cmp(sub("name", "familyName"), CompareOp::Co, json!("O'Malley"))
        );
        assert_eq!(p2("a eq \"\""), eq("a", json!("")));
        assert_eq!(
            p2("a eq \"(not) [and] or\""),
            eq("a", json!("(not) [and] or"))
        );
        assert_eq!(p2(r#"a eq "\u00C9""#), eq("a", json!("É")));
    }

    #[test]
    fn numbers_booleans_and_null() {
        for (text, value) in [
            ("0", json!(0)),
            ("42", json!(42)),
            ("-12", json!(-12)),
            ("3.5", json!(3.5)),
            ("-0.25", json!(-0.25)),
            ("1e3", json!(1000.0)),
            ("-2.5E-3", json!(-0.0025)),
            ("18446744073709551615", json!(18446744073709551615u64)),
            ("true", json!(true)),
            ("False", json!(false)),
            ("NULL", Value::Null),
        ] {
            assert_eq!(
                p1(&format!("a eq {text}")),
                eq("a", value.clone()),
                "{text}"
            );
            assert_eq!(p2(&format!("(a eq {text})")), eq("a", value), "{text}");
        }
        assert_eq!(
            p2("loginCount ge -1"),
            cmp(attr("loginCount"), CompareOp::Ge, json!(-1))
        );
    }

    #[test]
    fn unquoted_values_are_strings() {
        assert_eq!(
            p1("externalId eq jyoung"),
            eq("externalId", json!("jyoung"))
        );
        assert_eq!(
            p2("externalId eq jyoung"),
            eq("externalId", json!("jyoung"))
        );
        assert_eq!(
            p2("(externalId eq jyoung) and userName sw j.young@x.org"),
            and(
                eq("externalId", json!("jyoung")),
                cmp(attr("userName"), CompareOp::Sw, json!("j.young@x.org"))
            )
        );
        // Numeric-looking words that are not JSON numbers stay strings.
        assert_eq!(p2("id eq 0123"), eq("id", json!("0123")));
        assert_eq!(
            p2("id eq 5f3c0e2a-1b7d-4c51-9a80-2d2f1f0d1c11"),
            eq("id", json!("5f3c0e2a-1b7d-4c51-9a80-2d2f1f0d1c11"))
        );
    }

    // ----- parsing: value paths and URNs --------------------------------------------------

    #[test]
    fn entra_value_path_with_trailing_sub_attribute() {
        assert_eq!(
            p2("emails[type eq \"work\"].value eq \"x\""),
            vp(
                "emails",
                and(eq("type", json!("work")), eq("value", json!("x")))
            )
        );
        assert_eq!(
            p2("emails[type eq \"work\"].value pr"),
            vp(
                "emails",
                and(eq("type", json!("work")), Filter::Present(attr("value")))
            )
        );
        assert_eq!(
            p2("emails[type eq \"work\" or primary eq true].value eq \"x\" and userName eq \"u\""),
            and(
                vp(
                    "emails",
                    and(
                        or(eq("type", json!("work")), eq("primary", json!(true))),
                        eq("value", json!("x"))
                    )
                ),
                eq("userName", json!("u"))
            )
        );
    }

    #[test]
    fn plain_value_paths() {
        assert_eq!(
            p2("members[value eq \"123\"]"),
            vp("members", eq("value", json!("123")))
        );
        assert_eq!(
            p2("emails[ type eq \"work\" and value co \"@example.com\" ]"),
            vp(
                "emails",
                and(
                    eq("type", json!("work")),
                    cmp(attr("value"), CompareOp::Co, json!("@example.com"))
                )
            )
        );
        assert_eq!(
            p2("emails[not (type eq \"work\")]"),
            vp("emails", not(eq("type", json!("work"))))
        );
        assert_eq!(
            p2("userType eq \"Employee\" and emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and value co \"@foo.com\"]"),
            or(
                and(
                    eq("userType", json!("Employee")),
                    vp(
                        "emails",
                        and(
                            eq("type", json!("work")),
                            cmp(attr("value"), CompareOp::Co, json!("@example.com"))
                        )
                    )
                ),
                vp(
                    "ims",
                    and(
                        eq("type", json!("xmpp")),
                        cmp(attr("value"), CompareOp::Co, json!("@foo.com"))
                    )
                )
            )
        );
    }

    #[test]
    fn urn_qualified_paths() {
        assert_eq!(
            p2("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\""),
            cmp(urn(CORE_USER, "userName", None), CompareOp::Eq, json!("x"))
        );
        assert_eq!(
            p2("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"701984\""),
            cmp(urn(ENTERPRISE, "employeeNumber", None), CompareOp::Eq, json!("701984"))
        );
        assert_eq!(
            p2("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"1\""),
            cmp(
                urn(ENTERPRISE, "manager", Some("value")),
                CompareOp::Eq,
                json!("1")
            )
        );
        assert_eq!(
            p2("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName pr"),
            Filter::Present(urn(CORE_USER, "name", Some("familyName")))
        );
        assert_eq!(
            p2("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[value eq \"1\"]"),
            Filter::ValuePath(
                urn(ENTERPRISE, "manager", None),
                Box::new(eq("value", json!("1")))
            )
        );
        assert_eq!(
            urn(ENTERPRISE, "manager", Some("value")).to_string(),
            format!("{ENTERPRISE}:manager.value")
        );
    }

    // ----- parsing: errors ----------------------------------------------------------------

    #[test]
    fn malformed_inputs_report_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            ("   \t", 4, "empty filter"),
            ("userName", 8, "expected an operator after `userName`"),
            ("userName eq", 11, "missing value after operator \"eq\""),
            ("userName eq )", 12, "missing value"),
            ("userName eq and b eq 1", 12, "missing value"),
            (
                "userName eq \"x",
                12,
                "the quote at position 12 is never closed",
            ),
            ("(userName eq \"x\"", 0, "`(` at position 0 is never closed"),
            (
                "userName eq \"x\")",
                15,
                "`)` at position 15 has no matching `(`",
            ),
            ("userName eq \"x\" foo", 16, "unexpected \"foo\""),
            ("userName eq \"x\" and", 19, "filter ends there"),
            ("userName eq \"x\" and ()", 21, "found `)`"),
            ("()", 1, "expected an expression at position 1, found `)`"),
            (
                "emails[type eq \"work\"",
                6,
                "`[` at position 6 is never closed",
            ),
            (
                "emails[type eq \"work\"]]",
                22,
                "`]` at position 22 has no matching `[`",
            ),
            (
                "emails[type eq \"a\" and members[value eq \"b\"]]",
                30,
                "cannot be nested",
            ),
            ("emails[type eq \"a\")", 18, "expected `and`, `or` or `]`"),
            (
                "name.familyName[value eq \"x\"]",
                15,
                "not the sub-attribute",
            ),
            ("emails[name.x eq \"a\"]", 7, "inside a value filter"),
            ("active gt true", 10, "cannot order booleans"),
            ("a le null", 5, "cannot order null"),
            ("title pr \"x\"", 9, "\"pr\" takes no value"),
            ("userName co 5", 12, "compares strings"),
            ("a.b.c eq 1", 0, "more than one sub-attribute"),
            ("a. eq 1", 2, "missing attribute name"),
            ("1abc eq 1", 0, "invalid attribute name \"1abc\""),
            ("\"userName\" eq 1", 0, "found a quoted string"),
            ("a eq \"\\q\"", 6, "invalid escape `\\q`"),
            ("a eq \"\\ud800\"", 6, "unpaired surrogate"),
            ("a eq \"\\u12\"", 6, "four hex digits"),
            (
                "not a eq 1",
                0,
                "must be followed by a parenthesised filter",
            ),
            (
                "urn:ietf:params:scim:schemas:core:2.0:User: eq \"x\"",
                43,
                "after the URN",
            ),
            (":userName eq 1", 0, "empty URN"),
            ("userName = \"x\"", 9, "unknown operator \"=\""),
            (
                "emails[type eq \"work\"]. eq \"x\"",
                23,
                "missing attribute name",
            ),
        ];
        for (input, position, needle) in cases {
            let err = e2(input);
            assert!(
                err.message.contains(needle),
                "{input:?}: {:?} lacks {needle:?}",
                err.message
            );
            assert_eq!(err.position, *position, "{input:?}: {}", err.message);
            assert!(
                err.message.contains(&format!("position {position}"))
                    || *position == 0
                    || needle.starts_with("empty"),
                "{input:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let err = e2("displayName eq \"日本語\" foo");
        assert_eq!(err.position, 21);
    }

    // ----- robustness ---------------------------------------------------------------------

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let err = e2(&"(".repeat(10_000));
        assert!(err.message.contains("deeper than 64"), "{err}");
        assert_eq!(err.position, 64);
        assert!(e1(&"(".repeat(10_000)).message.contains("deeper than 64"));
        assert!(e2(&"not (".repeat(10_000))
            .message
            .contains("deeper than 64"));
        let balanced = format!("{}a eq 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(e2(&balanced).message.contains("deeper than 64"));

        let ok = format!("{}a eq 1{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(p2(&ok), eq("a", json!(1)));
        let too_deep = format!("{}a eq 1{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(e2(&too_deep).position, 64);
        let nots = format!("{}a eq 1{}", "not (".repeat(64), ")".repeat(64));
        assert!(matches(&p2(&nots), &json!({"a": 1}), &|_| false));
    }

    #[test]
    fn long_chains_are_bounded() {
        let chain = vec!["a eq 1"; MAX_TERMS].join(" or ");
        let filter = p2(&chain);
        assert!(matches(&filter, &json!({"a": 1}), &|_| false));
        assert!(!matches(&filter, &json!({"a": 2}), &|_| false));
        assert_eq!(attribute_paths(&filter), vec![attr("a")]);
        let too_long = vec!["a eq 1"; MAX_TERMS + 1].join(" and ");
        assert!(e2(&too_long).message.contains("more than 1000 conditions"));
    }

    #[test]
    fn never_panics_on_prefixes_or_garbage() {
        let samples = [
            "emails[type eq \"work\"].value eq \"x\" and not (userName sw \"\\u00e9\\ud83d\\ude00\")",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[value eq 1e5] or (a pr)",
            "a eq \"日本\" and (b gt -1.5 or c le null)",
        ];
        for sample in samples {
            let chars: Vec<char> = sample.chars().collect();
            for end in 0..=chars.len() {
                let prefix: String = chars[..end].iter().collect();
                let _ = parse(&prefix, Dialect::V1);
                let _ = parse(&prefix, Dialect::V2);
                let suffix: String = chars[end..].iter().collect();
                let _ = parse(&suffix, Dialect::V2);
            }
        }
        // Deterministic pseudo-random strings over the characters the grammar cares about.
        let alphabet: Vec<char> = "aeqnotrpsw()[]\".:$\\u0 \t-1eAND OR é".chars().collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut input = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            for dialect in [Dialect::V1, Dialect::V2] {
                if let Ok(filter) = parse(&input, dialect) {
                    let _ = matches(&filter, &user(), &|_| false);
                    let _ = attribute_paths(&filter);
                }
            }
        }
    }

    // ----- evaluation ---------------------------------------------------------------------

    #[test]
    fn matches_simple_attributes() {
        let u = user();
        assert!(m1("userName eq \"bjensen@example.com\"", &u));
        assert!(
            m1("USERNAME EQ \"BJensen@Example.com\"", &u),
            "case-insensitive by default"
        );
        assert!(m1("userName sw \"bjen\"", &u));
        assert!(m1("userName co \"@EXAMPLE\"", &u));
        assert!(m2("userName ew \".com\"", &u));
        assert!(!m2("userName ew \".org\"", &u));
        assert!(m2("userName ne \"someone\"", &u));
        assert!(!m2("userName ne \"BJENSEN@example.com\"", &u));
        assert!(m1("displayName gt \"Babs\"", &u));
        assert!(m1("displayName ge \"babs jensen\"", &u));
        assert!(m1("displayName lt \"c\"", &u));
        assert!(m1("displayName le \"Babs Jensen\"", &u));
        assert!(!m1("displayName lt \"Babs\"", &u));
        assert!(m1("name.familyName co \"O'Malley\"", &u));
        assert!(m1("Name.GivenName eq \"barbara\"", &u));
        assert!(!m1("name.middleName eq \"x\"", &u));
        assert!(m1("externalId eq BJensen-Ext", &u), "unquoted value");
    }

    #[test]
    fn case_exact_attributes() {
        let u = user();
        assert!(m2("externalId eq \"BJensen-Ext\"", &u));
        assert!(!m2("externalId eq \"bjensen-ext\"", &u));
        assert!(m2("externalId ne \"bjensen-ext\"", &u));
        assert!(!m2("ID eq \"2819C223-7F76-453A-919D-413861904646\"", &u));
        assert!(m2("id eq \"2819c223-7f76-453a-919d-413861904646\"", &u));
        assert!(!m2("externalId sw \"bj\"", &u));
    }

    #[test]
    fn case_exact_receives_the_compared_path() {
        let seen = RefCell::new(Vec::new());
        let record = |p: &AttrPath| {
            seen.borrow_mut().push(p.to_string());
            false
        };
        let u = user();
        assert!(matches(&p2("emails[type eq \"work\"]"), &u, &record));
        assert!(matches(&p2("emails eq \"babs@jensen.org\""), &u, &record));
        assert!(matches(&p2("name.givenName eq \"barbara\""), &u, &record));
        assert!(
            matches(&p2("loginCount eq 42"), &u, &record),
            "not asked for numbers"
        );
        let seen = seen.into_inner();
        assert_eq!(seen, ["emails.type", "emails.value", "name.givenName"]);
    }

    #[test]
    fn matches_numbers() {
        let u = user();
        assert!(m1("loginCount eq 42", &u));
        assert!(m1("loginCount eq 42.0", &u));
        assert!(m1("loginCount gt 41", &u));
        assert!(m1("loginCount ge 42", &u));
        assert!(!m1("loginCount lt 42", &u));
        assert!(m1("loginCount le 4.2e1", &u));
        assert!(m2("loginCount ne 43", &u));
        assert!(m1("score gt 2", &u));
        assert!(m1("score lt 3", &u));
        assert!(m1("score gt -1", &u));
        assert!(!m1("loginCount eq \"42\"", &u), "string vs number");
        assert!(!m1("userName gt 5", &u), "number vs string");
    }

    #[test]
    fn matches_booleans_and_string_booleans() {
        let u = user();
        assert!(m1("active eq true", &u));
        assert!(m1("active eq TRUE", &u));
        assert!(!m1("active eq false", &u));
        assert!(m2("active ne false", &u));
        assert!(m2("active eq \"True\"", &u), "string literal vs boolean");
        let mut entra = user();
        entra["active"] = json!("True");
        assert!(m1("active eq true", &entra));
        assert!(!m1("active eq false", &entra));
        entra["active"] = json!("false");
        assert!(m1("active eq false", &entra));
        assert!(m2(
            "emails[primary eq true].value eq \"bjensen@example.com\"",
            &u
        ));
        assert!(!m2(
            "emails[primary eq true].value eq \"babs@jensen.org\"",
            &u
        ));
    }

    #[test]
    fn matches_timestamps_as_strings() {
        let u = user();
        assert!(m1("meta.lastModified gt \"2011-05-13T04:42:33Z\"", &u));
        assert!(!m1("meta.lastModified gt \"2011-05-13T04:42:34Z\"", &u));
        assert!(m1("meta.lastModified ge \"2011-05-13T04:42:34Z\"", &u));
        assert!(m1("meta.created lt \"2011-01-01T00:00:00Z\"", &u));
        assert!(m1("meta.created le \"2010-01-23t04:56:22z\"", &u));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let u = json!({"meta": {"lastModified": "2011-05-13T04:42:34.500Z"}});
        assert!(m1("meta.lastModified gt \"2011-05-13T04:42:34Z\"", &u));
        assert!(m1("meta.lastModified lt \"2011-05-13T06:42:35+02:00\"", &u));
        assert!(m1("meta.lastModified eq \"2011-05-13T04:42:34.5Z\"", &u));
        assert!(!m1("meta.lastModified ge \"2011-05-13T04:42:35Z\"", &u));
    }

    #[test]
    fn matches_multi_valued_attributes() {
        let u = user();
        assert!(m1("emails co \"example.com\"", &u), "SCIM 1.1 spec example");
        assert!(m1("emails eq \"babs@jensen.org\"", &u));
        assert!(!m1("emails eq \"nobody@x.org\"", &u));
        assert!(m1("emails.type eq \"work\"", &u));
        assert!(m1("emails.type eq \"home\"", &u));
        assert!(m2("emails.type ne \"other\"", &u));
        assert!(
            !m2("emails.type ne \"work\"", &u),
            "ne means no element equals"
        );
        assert!(m1("groups.display eq \"tour guides\"", &u));
        assert!(m1(
            "schemas eq \"URN:ietf:params:scim:schemas:extension:enterprise:2.0:User\"",
            &u
        ));
        assert!(m1(
            "userType eq \"Employee\" and (emails co \"example.com\" or emails co \"example.org\")",
            &u
        ));
    }

    #[test]
    fn matches_value_paths() {
        let u = user();
        assert!(m2(
            "emails[type eq \"work\"].value eq \"bjensen@example.com\"",
            &u
        ));
        assert!(m2(
            "EMAILS[TYPE eq \"WORK\"].VALUE eq \"BJENSEN@example.com\"",
            &u
        ));
        assert!(
            !m2("emails[type eq \"work\"].value eq \"babs@jensen.org\"", &u),
            "same element"
        );
        assert!(m2(
            "emails[type eq \"home\" and value ew \"jensen.org\"]",
            &u
        ));
        assert!(m2("emails[not (type eq \"work\")]", &u));
        assert!(m2("emails[type eq \"work\"].primary pr", &u));
        assert!(!m2("emails[type eq \"home\"].primary pr", &u));
        assert!(m2("groups[value eq \"e9e30dba\"]", &u));
        assert!(!m2("phoneNumbers[type eq \"work\"]", &u));
        assert!(!m2("nothing[type eq \"work\"]", &u));
        assert!(m2("name[givenName eq \"Barbara\"]", &u), "singular complex");
        let group = json!({"displayName": "G", "members": [{"value": "123"}, {"value": "456"}]});
        assert!(m2("members[value eq \"456\"]", &group));
        assert!(!m2("members[value eq \"789\"]", &group));
        assert!(m2("members eq \"123\"", &group));
    }

    #[test]
    fn matches_urn_qualified_paths() {
        let u = user();
        assert!(m2(
            "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"bjensen@example.com\"",
            &u
        ));
        assert!(m2(
            "URN:IETF:params:scim:schemas:core:2.0:user:name.familyName sw \"o'\"",
            &u
        ));
        assert!(m2(
            &format!("{ENTERPRISE}:employeeNumber eq \"701984\""),
            &u
        ));
        assert!(m2(
            &format!("{}:EmployeeNumber eq \"701984\"", ENTERPRISE.to_lowercase()),
            &u
        ));
        assert!(m2(
            &format!("{ENTERPRISE}:manager.value eq \"26118915\""),
            &u
        ));
        assert!(
            m2(&format!("{ENTERPRISE}:manager eq \"26118915\""), &u),
            "bare complex compares value"
        );
        assert!(m2(
            &format!("{ENTERPRISE}:manager[displayName sw \"john\"]"),
            &u
        ));
        assert!(
            !m2(&format!("{ENTERPRISE}:userName pr"), &u),
            "not at top level"
        );
        assert!(
            !m2("employeeNumber pr", &u),
            "extension attributes need their URN"
        );
        assert!(!m2("urn:example:other:employeeNumber pr", &u));
        let v1 = json!({"userName": "a"});
        assert!(matches(
            &Filter::Present(urn("urn:scim:schemas:core:1.0", "userName", None)),
            &v1,
            &|_| false
        ));
    }

    #[test]
    fn matches_presence() {
        let u = user();
        assert!(m1("userName pr", &u));
        assert!(!m1("title pr", &u), "empty string");
        assert!(!m1("nickName pr", &u), "null");
        assert!(!m1("phoneNumbers pr", &u), "empty array");
        assert!(!m1("missing pr", &u));
        assert!(m1("emails pr", &u));
        assert!(m1("name pr", &u));
        assert!(m1("emails.primary pr", &u));
        assert!(!m1("emails.display pr", &u));
        assert!(!matches(&p1("name pr"), &json!({"name": {}}), &|_| false));
        assert!(!matches(
            &p1("name pr"),
            &json!({"name": {"givenName": ""}}),
            &|_| false
        ));
        assert!(matches(
            &p1("active pr"),
            &json!({"active": false}),
            &|_| false
        ));
    }

    #[test]
    fn matches_absent_and_null() {
        let u = user();
        assert!(!m2("missing eq \"x\"", &u));
        assert!(!m2("missing co \"x\"", &u));
        assert!(!m2("missing gt 1", &u));
        assert!(m2("missing ne \"x\"", &u), "absent counts as not equal");
        assert!(m2("missing eq null", &u));
        assert!(m2("nickName eq null", &u));
        assert!(!m2("userName eq null", &u));
        assert!(m2("userName ne null", &u));
        assert!(!m2("userName eq \"x\"", &json!("not an object")));
    }

    #[test]
    fn matches_logic() {
        let u = user();
        assert!(m2(
            "userName eq \"x\" or active eq true and loginCount gt 40",
            &u
        ));
        assert!(!m2(
            "(userName eq \"x\" or active eq true) and loginCount gt 50",
            &u
        ));
        assert!(m2("not (userName eq \"x\") and not (active eq false)", &u));
        assert!(!m2("not (userName pr)", &u));
        assert!(m2(
            "id eq \"2819c223-7f76-453a-919d-413861904646\" and manager eq \"26118915\"",
            &json!({
                "id": "2819c223-7f76-453a-919d-413861904646",
                "manager": {"value": "26118915"}
            })
        ));
    }

    // ----- helpers for the caller ---------------------------------------------------------

    #[test]
    fn attribute_paths_lists_every_path_once() {
        let filter = p2(&format!(
            "userName eq \"x\" and (emails[type eq \"work\"].value eq \"y\" or not (name.familyName pr)) \
             and USERNAME sw \"a\" and {ENTERPRISE}:manager[value eq \"1\"] and {ENTERPRISE}:employeeNumber pr"
        ));
        assert_eq!(
            attribute_paths(&filter),
            vec![
                attr("userName"),
                attr("emails"),
                sub("emails", "type"),
                sub("emails", "value"),
                sub("name", "familyName"),
                urn(ENTERPRISE, "manager", None),
                urn(ENTERPRISE, "manager", Some("value")),
                urn(ENTERPRISE, "employeeNumber", None),
            ]
        );
        assert_eq!(
            attribute_paths(&p1("emails co \"x\"")),
            vec![attr("emails")]
        );
    }

    #[test]
    fn as_simple_equality_only_for_a_lone_string_equality() {
        let filter = p2("userName eq \"bjensen\"");
        assert_eq!(
            as_simple_equality(&filter),
            Some((&attr("userName"), "bjensen"))
        );
        let filter = p1("((externalId EQ jyoung))");
        assert_eq!(
            as_simple_equality(&filter),
            Some((&attr("externalId"), "jyoung"))
        );
        let filter = p2(&format!("{ENTERPRISE}:employeeNumber eq \"7\""));
        assert_eq!(
            as_simple_equality(&filter),
            Some((&urn(ENTERPRISE, "employeeNumber", None), "7"))
        );
        for input in [
            "userName ne \"x\"",
            "userName sw \"x\"",
            "loginCount eq 1",
            "active eq true",
            "userName eq null",
            "userName eq \"x\" and active eq true",
            "not (userName eq \"x\")",
            "emails[type eq \"work\"].value eq \"x\"",
            "userName pr",
        ] {
            assert_eq!(as_simple_equality(&p2(input)), None, "{input}");
        }
    }
}
