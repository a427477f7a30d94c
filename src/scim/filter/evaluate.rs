//! Evaluating a [`Filter`] against a resource as rendered for the client.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::{AttrPath, CompareOp, Filter, CORE_URNS};

pub(super) fn eval(
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
        use crate::rfc3339::millis_from_rfc3339;
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
