//! A JSON Schema checker for the keywords the tools' output schemas use (type, properties, required,
//! additionalProperties: false, items, enum, minimum, maximum, minItems, maxItems, format: date). Any other keyword
//! panics, so a schema cannot come to rely on something this does not check. Used by the unit tests and, through
//! `#[path]`, by the integration tests.

use serde_json::Value;

/// `Err` names the first place where `value` breaks `schema`, as a path like `$.details.workingDays`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn is_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let rules = schema
        .as_object()
        .unwrap_or_else(|| panic!("schema at {path} is not an object: {schema}"));
    let fail = |why: String| Err(format!("{path}: {why} (value {value})"));
    for (keyword, rule) in rules {
        match keyword.as_str() {
            "type" => {
                let kinds: Vec<&str> = match rule {
                    Value::String(k) => vec![k.as_str()],
                    Value::Array(ks) => ks.iter().map(|k| k.as_str().expect("type name")).collect(),
                    other => panic!("type at {path} is {other}"),
                };
                if !kinds.iter().any(|k| is_type(value, k)) {
                    return fail(format!("not of type {kinds:?}"));
                }
            }
            "properties" => {
                let props = rule.as_object().expect("properties is an object");
                if let Some(obj) = value.as_object() {
                    for (name, sub) in props {
                        if let Some(v) = obj.get(name) {
                            check(sub, v, &format!("{path}.{name}"))?;
                        }
                    }
                }
            }
            "required" => {
                if let Some(obj) = value.as_object() {
                    for name in rule.as_array().expect("required is an array") {
                        let name = name.as_str().expect("required names are strings");
                        if !obj.contains_key(name) {
                            return fail(format!("missing required property {name:?}"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                assert_eq!(
                    rule,
                    &Value::Bool(false),
                    "only additionalProperties: false is supported"
                );
                let empty = serde_json::Map::new();
                let props = rules
                    .get("properties")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                if let Some(obj) = value.as_object() {
                    if let Some(extra) = obj.keys().find(|k| !props.contains_key(*k)) {
                        return fail(format!("property {extra:?} is not in the schema"));
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        check(rule, item, &format!("{path}[{i}]"))?;
                    }
                }
            }
            "enum" => {
                if !rule.as_array().expect("enum is an array").contains(value) {
                    return fail(format!("not one of {rule}"));
                }
            }
            "minimum" | "maximum" => {
                let bound = rule.as_f64().expect("numeric bound");
                if let Some(n) = value.as_f64() {
                    let ok = if keyword == "minimum" {
                        n >= bound
                    } else {
                        n <= bound
                    };
                    if !ok {
                        return fail(format!("{keyword} is {bound}"));
                    }
                }
            }
            "minItems" | "maxItems" => {
                let bound = rule.as_u64().expect("item count") as usize;
                if let Some(items) = value.as_array() {
                    let ok = if keyword == "minItems" {
                        items.len() >= bound
                    } else {
                        items.len() <= bound
                    };
                    if !ok {
                        return fail(format!("{keyword} is {bound}, has {}", items.len()));
                    }
                }
            }
            "format" => {
                assert_eq!(rule, "date", "only format: date is supported");
                if let Some(s) = value.as_str() {
                    if !is_date(s) {
                        return fail("not a YYYY-MM-DD date".into());
                    }
                }
            }
            "description" | "title" | "default" => {}
            other => panic!("schema keyword {other:?} at {path} is not supported by this checker"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "n": { "type": "integer", "minimum": 0, "maximum": 30 },
                "r": { "type": ["number", "null"] },
                "e": { "type": "string", "enum": ["A", "B"] },
                "d": { "type": "string", "format": "date" },
                "l": { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 2 }
            },
            "required": ["n", "e"],
            "additionalProperties": false
        })
    }

    #[test]
    fn accepts_what_matches() {
        let ok = [
            json!({"n": 0, "e": "A"}),
            json!({"n": 30, "e": "B", "r": null, "d": "2024-02-29", "l": ["x"]}),
            json!({"n": 3.0, "e": "A", "r": -0.5, "l": ["x", "y"]}),
        ];
        for v in ok {
            assert_eq!(validate(&schema(), &v), Ok(()), "{v}");
        }
    }

    #[test]
    fn rejects_each_kind_of_mismatch() {
        let cases = [
            (json!([]), "$: not of type"),
            (json!({"e": "A"}), "missing required property \"n\""),
            (
                json!({"n": 1, "e": "A", "x": 1}),
                "property \"x\" is not in the schema",
            ),
            (json!({"n": 1.5, "e": "A"}), "$.n: not of type"),
            (json!({"n": -1, "e": "A"}), "$.n: minimum is 0"),
            (json!({"n": 31, "e": "A"}), "$.n: maximum is 30"),
            (json!({"n": 1, "e": "C"}), "$.e: not one of"),
            (json!({"n": 1, "e": "A", "r": "x"}), "$.r: not of type"),
            (
                json!({"n": 1, "e": "A", "d": "2025-02-29"}),
                "$.d: not a YYYY-MM-DD date",
            ),
            (
                json!({"n": 1, "e": "A", "d": "2025-2-28"}),
                "$.d: not a YYYY-MM-DD date",
            ),
            (json!({"n": 1, "e": "A", "l": []}), "$.l: minItems is 1"),
            (
                json!({"n": 1, "e": "A", "l": ["a", "b", "c"]}),
                "$.l: maxItems is 2",
            ),
            (json!({"n": 1, "e": "A", "l": [1]}), "$.l[0]: not of type"),
        ];
        for (v, message) in cases {
            let err = validate(&schema(), &v).unwrap_err();
            assert!(err.contains(message), "{v}: {err}");
        }
    }

    #[test]
    #[should_panic(expected = "not supported by this checker")]
    fn unknown_keywords_panic() {
        let _ = validate(&json!({"type": "string", "pattern": "^a"}), &json!("a"));
    }
}
