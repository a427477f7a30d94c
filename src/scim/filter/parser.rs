//! The recursive-descent parser for both grammars: the [`Dialect`] decides which operators and
//! value forms are accepted, and positions in errors count characters, not bytes.

use serde_json::Value;

use super::{
    AttrPath, CompareOp, Dialect, Filter, FilterError, MAX_DEPTH, MAX_TERMS, V1_OPERATORS,
    V2_OPERATORS,
};

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
