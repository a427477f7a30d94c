//! SCIM filter expressions: the SCIM 1.1 grammar and the RFC 7644 §3.4.2.2 grammar, parsed into
//! one [`Filter`] tree and evaluated against resources as rendered for the client.
//!
//! Positions in [`FilterError`] are 0-based character (not byte) offsets into the filter text,
//! because they end up in messages read by people comparing them with what they typed.

use std::fmt;

use serde_json::Value;

mod evaluate;
mod parser;

pub use parser::parse;

use evaluate::eval;

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
