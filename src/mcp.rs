//! MCP over streamable HTTP, stateless: one POST body in, one reply out.
//!
//! Every POST is answered on its own (no session id, no server-initiated stream), so any replica can serve any
//! request. JSON-RPC requests get `application/json`, or a one-event `text/event-stream` when the client accepts
//! only that; notifications and client responses get 202 with no body.

use crate::calendar::{self, Date};
use crate::fare;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::SystemTime;

pub const SERVER_NAME: &str = env!("CARGO_PKG_NAME");
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Newest first; the first one is offered to clients that ask for something else.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The first version without JSON-RPC batches (they were removed in 2025-06-18).
const NO_BATCHES_FROM: &str = "2025-06-18";
/// What a request without an MCP-Protocol-Version header speaks, as the streamable HTTP transport prescribes.
const DEFAULT_HEADER_VERSION: &str = "2025-03-26";

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

pub const TOOL_NAMES: [&str; 2] = ["calculate_fare", "get_discount_info"];

/// What the HTTP layer sends back for one POST /mcp.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Reply {
    fn accepted() -> Reply {
        Reply {
            status: 202,
            content_type: None,
            body: Vec::new(),
        }
    }

    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            body: v.to_string().into_bytes(),
        }
    }

    fn sse(v: &Value) -> Reply {
        Reply {
            status: 200,
            content_type: Some("text/event-stream"),
            body: format!("event: message\ndata: {v}\n\n").into_bytes(),
        }
    }
}

fn error(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn success(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// True when the Accept header lists text/event-stream and nothing that admits JSON.
pub fn wants_only_sse(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let types: Vec<String> = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let sse = types.iter().any(|t| t == "text/event-stream");
    let json = types
        .iter()
        .any(|t| t == "application/json" || t == "application/*" || t == "*/*");
    sse && !json
}

/// Handles one POST /mcp body; `now` is the instant whose Asia/Taipei date counts as "today".
pub fn handle_post(
    body: &[u8],
    accept: Option<&str>,
    protocol_version: Option<&str>,
    now: SystemTime,
) -> Reply {
    if let Some(v) = protocol_version.map(str::trim) {
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&v) {
            let msg = format!(
                "Unsupported MCP-Protocol-Version {v:?}; supported: {}",
                SUPPORTED_PROTOCOL_VERSIONS.join(", ")
            );
            return Reply::json(400, &error(Value::Null, INVALID_REQUEST, msg));
        }
    }
    let protocol_version = protocol_version.map(str::trim);
    let message: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("Parse error: the body is not valid JSON ({e})");
            return Reply::json(400, &error(Value::Null, PARSE_ERROR, msg));
        }
    };
    let today = Date::taipei_today(now);
    let reply = match message {
        Value::Array(items) if items.is_empty() => {
            let msg = "Invalid Request: empty batch".to_string();
            return Reply::json(400, &error(Value::Null, INVALID_REQUEST, msg));
        }
        Value::Array(items) => {
            let version = batch_protocol_version(protocol_version, &items);
            // Dates in YYYY-MM-DD order compare as strings.
            if version >= NO_BATCHES_FROM {
                let msg = format!(
                    "Invalid Request: JSON-RPC batches are not part of MCP {version} (removed in {NO_BATCHES_FROM}); send one message per POST"
                );
                return Reply::json(400, &error(Value::Null, INVALID_REQUEST, msg));
            }
            let out: Vec<Value> = items
                .iter()
                .filter_map(|m| handle_message(m, today).map(|(_, v)| v))
                .collect();
            if out.is_empty() {
                return Reply::accepted();
            }
            Value::Array(out)
        }
        single => match handle_message(&single, today) {
            None => return Reply::accepted(),
            Some((Outcome::Invalid, v)) => return Reply::json(400, &v),
            Some((Outcome::Answered, v)) => v,
        },
    };
    if wants_only_sse(accept) {
        Reply::sse(&reply)
    } else {
        Reply::json(200, &reply)
    }
}

/// The protocol version a batch is sent under: the MCP-Protocol-Version header, else the version an initialize
/// request inside the batch negotiates, else the transport's default for requests without the header.
fn batch_protocol_version<'a>(header: Option<&'a str>, items: &[Value]) -> &'a str {
    if let Some(v) = header {
        return v;
    }
    items
        .iter()
        .filter(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
        .map(|m| negotiate(m.get("params")))
        .max()
        .unwrap_or(DEFAULT_HEADER_VERSION)
}

enum Outcome {
    Answered,
    /// Not a JSON-RPC message at all: HTTP 400 when sent alone.
    Invalid,
}

/// A JSON-RPC response for requests; `None` for notifications and for responses the client sends us.
fn handle_message(msg: &Value, today: Date) -> Option<(Outcome, Value)> {
    let invalid = |id: Value, why: &str| {
        Some((
            Outcome::Invalid,
            error(id, INVALID_REQUEST, format!("Invalid Request: {why}")),
        ))
    };
    let Some(obj) = msg.as_object() else {
        return invalid(Value::Null, "a JSON-RPC message must be a JSON object");
    };
    let id = obj.get("id").cloned();
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(id.unwrap_or(Value::Null), "\"jsonrpc\" must be \"2.0\"");
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return invalid(id.unwrap_or(Value::Null), "\"method\" must be a string"),
        // A response to a server request: this server sends none, so there is nothing to match it with.
        None if obj.contains_key("result") || obj.contains_key("error") => return None,
        None => return invalid(id.unwrap_or(Value::Null), "\"method\" is missing"),
    };
    let id = match id {
        None => return None, // notification
        Some(id @ (Value::String(_) | Value::Number(_))) => id,
        Some(_) => return invalid(Value::Null, "\"id\" must be a string or a number"),
    };
    let params = obj.get("params");
    let answer = match method {
        "initialize" => success(id, initialize(params)),
        "ping" => success(id, json!({})),
        "tools/list" => success(id, json!({ "tools": tools() })),
        "tools/call" => match call_tool(params, today) {
            Ok(result) => success(id, result),
            Err(msg) => error(id, INVALID_PARAMS, msg),
        },
        other => error(id, METHOD_NOT_FOUND, format!("Method not found: {other}")),
    };
    Some((Outcome::Answered, answer))
}

/// The version an initialize request gets: the one it asks for when supported, else the newest.
fn negotiate(params: Option<&Value>) -> &'static str {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    SUPPORTED_PROTOCOL_VERSIONS
        .iter()
        .find(|v| Some(**v) == requested)
        .copied()
        .unwrap_or(SUPPORTED_PROTOCOL_VERSIONS[0])
}

fn initialize(params: Option<&Value>) -> Value {
    let version = negotiate(params);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": {
            "name": SERVER_NAME,
            "title": "TPASS month-price calculator",
            "version": SERVER_VERSION,
        },
        "instructions": "Answers whether the NT$1200 TPASS 30-day pass is cheaper than paying per ride with the Taipei Metro frequent-rider discount. Call calculate_fare with a start date, one-way fare and trips per working day; get_discount_info explains the tiers.",
    })
}

/// The tools/list answer: `src/tools.json`, with the years of the embedded calendars in calculate_fare's
/// description. The tools and their schemas are data, as clients read them; built in code with `json!`, they took a
/// fifth of the app's compile time. The tests hold the file to the limits and defaults `fare` enforces.
pub fn tools() -> &'static Value {
    static TOOLS: OnceLock<Value> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let mut tools: Value =
            serde_json::from_str(include_str!("tools.json")).expect("src/tools.json is JSON");
        if let Some(description) = tools[0]["description"].as_str() {
            let description = description.replace("{years}", &calendar::covered_years_text());
            tools[0]["description"] = Value::String(description);
        }
        tools
    })
}

fn tool_error(message: String) -> Value {
    json!({ "content": [{ "type": "text", "text": message }], "isError": true })
}

fn tool_result(v: Value) -> Value {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    json!({ "content": [{ "type": "text", "text": text }], "structuredContent": v, "isError": false })
}

/// `Err` only for a malformed tools/call; tool failures (unknown tool, bad input) are results with isError.
fn call_tool(params: Option<&Value>, today: Date) -> Result<Value, String> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| "Invalid params: tools/call needs params.name (a tool name)".to_string())?;
    let args = params.and_then(|p| p.get("arguments"));
    Ok(match name {
        "calculate_fare" => match fare::Request::from_args(args) {
            Ok(req) => tool_result(fare::calculate(&req, today).to_json()),
            Err(msg) => tool_error(format!("Invalid input: {msg}")),
        },
        "get_discount_info" => tool_result(fare::discount_info()),
        other => tool_error(format!(
            "Unknown tool: {other}; available tools: {}",
            TOOL_NAMES.join(", ")
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2025-06-01 in Taipei, before every date used below.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_748_736_000)
    }

    fn post(body: &str) -> (u16, Value) {
        let r = handle_post(
            body.as_bytes(),
            Some("application/json, text/event-stream"),
            None,
            now(),
        );
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap()
        };
        (r.status, v)
    }

    fn call(args: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "calculate_fare", "arguments": args}});
        let (status, v) = post(&body.to_string());
        assert_eq!(status, 200);
        v["result"].clone()
    }

    #[test]
    fn now_is_june_2025_in_taipei() {
        assert_eq!(Date::taipei_today(now()).to_string(), "2025-06-01");
    }

    #[test]
    fn initialize_negotiates_protocol_version() {
        let cases = [
            ("2025-03-26", "2025-03-26"),
            ("2024-11-05", "2024-11-05"),
            ("2025-06-18", "2025-06-18"),
            ("1999-01-01", SUPPORTED_PROTOCOL_VERSIONS[0]),
        ];
        for (asked, answered) in cases {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
            let (status, v) = post(&body.to_string());
            assert_eq!(status, 200);
            assert_eq!(v["id"], 1);
            assert_eq!(v["result"]["protocolVersion"], answered, "asked {asked}");
            assert_eq!(v["result"]["serverInfo"]["name"], SERVER_NAME);
            assert_eq!(v["result"]["serverInfo"]["version"], SERVER_VERSION);
            assert!(v["result"]["capabilities"]["tools"].is_object());
        }
    }

    #[test]
    fn ping_and_tools_list() {
        let (status, v) = post(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
        assert_eq!(
            (status, &v["id"], &v["result"]),
            (200, &json!("a"), &json!({}))
        );
        let (_, v) = post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, TOOL_NAMES);
    }

    #[test]
    fn notifications_and_client_responses_get_202() {
        for body in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
            r#"[{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}]"#,
        ] {
            let r = handle_post(body.as_bytes(), None, None, now());
            assert_eq!(r, Reply::accepted(), "{body}");
        }
    }

    #[test]
    fn invalid_json_and_invalid_requests_are_400() {
        let (status, v) = post("{not json");
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        assert_eq!(v["id"], Value::Null);
        for body in [
            "[]",
            "42",
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":3}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
        ] {
            let (status, v) = post(body);
            assert_eq!(status, 400, "{body}");
            assert_eq!(v["error"]["code"], INVALID_REQUEST, "{body}");
        }
    }

    #[test]
    fn unsupported_protocol_header_is_400() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let r = handle_post(body, None, Some("2030-01-01"), now());
        assert_eq!(r.status, 400);
        let r = handle_post(body, None, Some("2025-06-18"), now());
        assert_eq!(r.status, 200);
    }

    #[test]
    fn unknown_method_is_json_rpc_error() {
        let (status, v) = post(r#"{"jsonrpc":"2.0","id":3,"method":"resources/list"}"#);
        assert_eq!(status, 200);
        assert_eq!(v["error"]["code"], METHOD_NOT_FOUND);
        let (_, v) = post(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#);
        assert_eq!(v["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn batch_answers_requests_only() {
        let (status, v) = post(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
        );
        assert_eq!(status, 200);
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["result"], json!({}));
        assert_eq!(arr[1]["error"]["code"], METHOD_NOT_FOUND);
    }

    fn post_with_version(body: &str, version: Option<&str>) -> (u16, Value) {
        let r = handle_post(body.as_bytes(), None, version, now());
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap()
        };
        (r.status, v)
    }

    #[test]
    fn batches_only_before_2025_06_18() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
        for version in [Some("2025-03-26"), Some("2024-11-05"), None] {
            let (status, v) = post_with_version(batch, version);
            assert_eq!(status, 200, "{version:?}");
            assert_eq!(v.as_array().map(Vec::len), Some(2), "{version:?}");
        }
        let notes = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        for version in ["2025-06-18", "2025-11-25"] {
            for body in [batch, notes] {
                let (status, v) = post_with_version(body, Some(version));
                assert_eq!(status, 400, "{version} {body}");
                assert_eq!(v["error"]["code"], INVALID_REQUEST);
                assert_eq!(v["id"], Value::Null);
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("batches") && msg.contains(version), "{msg}");
            }
            // The same messages one per POST are fine.
            let (status, _) =
                post_with_version(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, Some(version));
            assert_eq!(status, 200);
        }
        // Without the header, an initialize in the batch decides: the version it negotiates.
        let init = |asked: &str| {
            format!(
                r#"[{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{asked}","capabilities":{{}},"clientInfo":{{"name":"t","version":"0"}}}}}}]"#
            )
        };
        assert_eq!(post_with_version(&init("2025-03-26"), None).0, 200);
        assert_eq!(post_with_version(&init("2025-06-18"), None).0, 400);
        assert_eq!(post_with_version(&init("2025-11-25"), None).0, 400);
        // An unknown version negotiates the newest, which has no batches.
        assert_eq!(post_with_version(&init("2099-01-01"), None).0, 400);
        // The header wins over the initialize inside.
        assert_eq!(
            post_with_version(&init("2025-11-25"), Some("2025-03-26")).0,
            200
        );
    }

    /// The `structuredContent` of a calculate_fare result (JSON Schema; the keywords common to draft-07 and
    /// 2020-12).
    fn calculate_fare_output_schema() -> &'static Value {
        &tools()[0]["outputSchema"]
    }

    /// The `structuredContent` of a get_discount_info result.
    fn discount_info_output_schema() -> &'static Value {
        &tools()[1]["outputSchema"]
    }

    /// What tools.json says of the inputs and results is what `fare` and `calendar` enforce.
    #[test]
    fn tools_json_states_the_limits_the_code_enforces() {
        let int = |n: u32| json!(n);
        let input = "/0/inputSchema/properties";
        let details = "/0/outputSchema/properties/details/properties";
        let cases = [
            (format!("{input}/oneWayFare/minimum"), int(fare::FARE_RANGE.0)),
            (format!("{input}/oneWayFare/maximum"), int(fare::FARE_RANGE.1)),
            (format!("{input}/oneWayFare/default"), int(fare::DEFAULT_ONE_WAY_FARE)),
            (format!("{input}/tripsPerDay/minimum"), int(fare::TRIPS_PER_DAY_RANGE.0)),
            (format!("{input}/tripsPerDay/maximum"), int(fare::TRIPS_PER_DAY_RANGE.1)),
            (format!("{input}/tripsPerDay/default"), int(fare::DEFAULT_TRIPS_PER_DAY)),
            (format!("{input}/customWorkingDays/minimum"), int(fare::CUSTOM_WORKING_DAYS_RANGE.0)),
            (format!("{input}/customWorkingDays/maximum"), int(fare::CUSTOM_WORKING_DAYS_RANGE.1)),
            (format!("{details}/oneWayFare/minimum"), int(fare::FARE_RANGE.0)),
            (format!("{details}/oneWayFare/maximum"), int(fare::FARE_RANGE.1)),
            (format!("{details}/tripsPerDay/minimum"), int(fare::TRIPS_PER_DAY_RANGE.0)),
            (format!("{details}/tripsPerDay/maximum"), int(fare::TRIPS_PER_DAY_RANGE.1)),
            (format!("{details}/workingDays/maximum"), int(fare::TPASS_DAYS)),
            (
                "/0/outputSchema/properties/holidays/properties/list/items/properties/dayOfWeek/enum".into(),
                json!(calendar::WEEKDAY_NAMES),
            ),
            ("/0/name".into(), json!(TOOL_NAMES[0])),
            ("/1/name".into(), json!(TOOL_NAMES[1])),
        ];
        for (pointer, want) in cases {
            assert_eq!(tools().pointer(&pointer), Some(&want), "{pointer}");
        }
        let description = tools()[0]["description"].as_str().unwrap();
        assert!(!description.contains('{'), "{description}");
        assert!(
            description.contains(&format!(
                "calendar for {} (",
                calendar::covered_years_text()
            )),
            "{description}"
        );
    }

    /// Every object schema of a result names its properties, requires each (only monthlyBreakdown is optional)
    /// and allows nothing else.
    #[test]
    fn result_schemas_are_closed_objects() {
        fn walk(schema: &Value, path: &str, found: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                assert_eq!(schema["additionalProperties"], false, "{path}");
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{path} has no required list"))
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                for (name, property) in properties {
                    if !required.contains(&name.as_str()) {
                        found.push(format!("{path}/{name}"));
                    }
                    walk(property, &format!("{path}/{name}"), found);
                }
                assert!(
                    required.iter().all(|r| properties.contains_key(*r)),
                    "{path}"
                );
            }
            if let Some(items) = schema.get("items") {
                walk(items, &format!("{path}[]"), found);
            }
        }
        let mut optional = Vec::new();
        walk(
            calculate_fare_output_schema(),
            "calculate_fare",
            &mut optional,
        );
        walk(
            discount_info_output_schema(),
            "get_discount_info",
            &mut optional,
        );
        assert_eq!(optional, ["calculate_fare/monthlyBreakdown"]);
    }

    #[test]
    fn tools_declare_output_schemas() {
        let (_, v) = post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        let tools = v["result"]["tools"].as_array().unwrap();
        assert_eq!(tools, super::tools().as_array().unwrap());
        for t in tools {
            assert_eq!(t["outputSchema"]["type"], "object", "{}", t["name"]);
            assert_eq!(t["inputSchema"]["type"], "object", "{}", t["name"]);
        }
        let schema = calculate_fare_output_schema();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(!required.contains(&"monthlyBreakdown"));
        assert!(required.contains(&"savingsPercentage") && required.contains(&"holidays"));
    }

    /// Every calculate_fare result validates: each start date from December 2024 to January 2029 (inside, across
    /// and outside the embedded years, every month end), with calendar days and a spread of custom days and fares.
    #[test]
    fn every_result_validates_against_its_output_schema() {
        let schema = calculate_fare_output_schema();
        let first = Date::parse("2024-12-01").unwrap();
        let mut crossing = 0;
        for i in 0..1_520 {
            let start = first.add_days(i).to_string();
            let custom = match i % 4 {
                0 => Value::Null,
                1 => json!(0),
                2 => json!(i % 31),
                _ => json!(30),
            };
            let args = json!({
                "startDate": start,
                "oneWayFare": 1 + (i * 37) % 1000,
                "tripsPerDay": 1 + i % 10,
                "customWorkingDays": custom,
            });
            let r = call(args.clone());
            assert_eq!(r["isError"], false, "{args}");
            let content = &r["structuredContent"];
            if let Err(e) = crate::schema_check::validate(schema, content) {
                panic!("{args}: {e}");
            }
            crossing += usize::from(content.get("monthlyBreakdown").is_some());
        }
        assert!(crossing > 1_000, "{crossing}");
        // The default start (no arguments) too.
        let r = call(json!({}));
        assert_eq!(
            crate::schema_check::validate(schema, &r["structuredContent"]),
            Ok(())
        );

        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "get_discount_info", "arguments": {}}});
        let (_, v) = post(&body.to_string());
        let info = &v["result"]["structuredContent"];
        assert_eq!(
            crate::schema_check::validate(discount_info_output_schema(), info),
            Ok(())
        );
    }

    #[test]
    fn schemas_catch_a_result_that_drifts() {
        let schema = calculate_fare_output_schema();
        let mut r = call(json!({"startDate": "2027-02-01"}))["structuredContent"].clone();
        assert_eq!(crate::schema_check::validate(schema, &r), Ok(()));
        r["details"]["workingDays"] = json!("16");
        assert!(crate::schema_check::validate(schema, &r).is_err());
        r["details"]["workingDays"] = json!(16);
        r["surprise"] = json!(1);
        assert!(crate::schema_check::validate(schema, &r).is_err());
        r.as_object_mut().unwrap().remove("surprise");
        r.as_object_mut().unwrap().remove("warnings");
        assert!(crate::schema_check::validate(schema, &r).is_err());
    }

    #[test]
    fn calculate_fare_result_carries_text_and_structured_content() {
        let r = call(json!({"startDate": "2025-10-01", "oneWayFare": 40, "customWorkingDays": 22}));
        assert_eq!(r["isError"], false);
        let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, r["structuredContent"]);
        assert_eq!(text["regularCost"], 1496);
        assert_eq!(text["savingsAmount"], -296);
        assert_eq!(text["recommendation"], "BUY_TPASS");
    }

    #[test]
    fn tool_errors_are_results_with_is_error() {
        let r = call(json!({"oneWayFare": 0}));
        assert_eq!(r["isError"], true);
        assert_eq!(
            r["content"][0]["text"],
            "Invalid input: oneWayFare must be between 1 and 1000 (got 0)"
        );
        let body =
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope"}});
        let (_, v) = post(&body.to_string());
        assert_eq!(v["result"]["isError"], true);
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Unknown tool: nope"));
    }

    #[test]
    fn default_start_uses_taipei_today() {
        // 2025-06-01 is a Sunday: the next working day is Monday 2025-06-02.
        let r = call(json!({}));
        assert_eq!(
            r["structuredContent"]["details"]["periodStart"],
            "2025-06-02"
        );
        assert_eq!(r["structuredContent"]["details"]["periodEnd"], "2025-07-01");
    }

    #[test]
    fn sse_only_when_json_is_not_accepted() {
        let cases = [
            (None, false),
            (Some("application/json"), false),
            (Some("application/json, text/event-stream"), false),
            (Some("text/event-stream"), true),
            (Some("Text/Event-Stream; q=1.0"), true),
            (Some("text/event-stream, */*;q=0.1"), false),
        ];
        for (accept, sse) in cases {
            assert_eq!(wants_only_sse(accept), sse, "{accept:?}");
        }
        let r = handle_post(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            Some("text/event-stream"),
            None,
            now(),
        );
        assert_eq!(r.content_type, Some("text/event-stream"));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "event: message\ndata: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{}}\n\n"
        );
    }
}
