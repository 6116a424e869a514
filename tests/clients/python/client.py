"""Drives the server with the official MCP Python SDK over streamable HTTP.

Usage: python client.py http://127.0.0.1:PORT/mcp

Prints one `ok <check>` line per check and ends with `<N> checks passed`; the first failed check prints
`FAIL <check>: <why>` and exits 1. tests/sdk_clients.rs runs it against the real binary.
"""

import asyncio
import copy
import json
import sys
from importlib.metadata import version

import jsonschema
from mcp import Client
from mcp_types import Implementation

passed = []


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    passed.append(name)
    print(f"ok {name}", flush=True)


def text_of(result):
    return result.content[0].text


def validates(schema, value):
    """Both dialects the SDKs use: draft 2020-12 (Python's default) and draft-07 (ajv's)."""
    for validator in (jsonschema.Draft202012Validator, jsonschema.Draft7Validator):
        validator(schema, format_checker=validator.FORMAT_CHECKER).validate(value)
    return True


async def main(url):
    async with Client(url, client_info=Implementation(name="sdk-client-test", version="1")) as client:
        check("initialize", client.protocol_version == "2025-11-25", client.protocol_version)
        check(
            "server info",
            client.server_info is not None and client.server_info.name == "mcp-taipei-metro-month-price",
            repr(client.server_info),
        )
        await client.send_ping()
        check("ping", True)

        tools = (await client.list_tools()).tools
        names = [t.name for t in tools]
        check("tools/list", names == ["calculate_fare", "get_discount_info"], repr(names))
        schemas = {t.name: t.output_schema for t in tools}
        for name, schema in schemas.items():
            check(f"output schema {name}", isinstance(schema, dict) and schema.get("type") == "object", repr(schema))
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.Draft7Validator.check_schema(schema)
            check(f"output schema {name} is a valid JSON Schema", True)

        # The SDK checks structuredContent against the output schema itself; these check it again explicitly.
        r = await client.call_tool("calculate_fare", {"startDate": "2027-02-01", "oneWayFare": 40})
        s = r.structured_content
        check("calculate_fare 2027-02-01 succeeds", not r.is_error, text_of(r))
        check("calculate_fare structured content validates", validates(schemas["calculate_fare"], s))
        check("calculate_fare text equals structured content", json.loads(text_of(r)) == s)
        check(
            "calculate_fare 2027-02-01 numbers",
            (s["details"]["workingDays"], s["regularCost"], s["recommendation"]) == (16, 1160, "USE_REGULAR"),
            json.dumps(s["details"]),
        )
        broken = copy.deepcopy(s)
        broken["details"]["workingDays"] = "16"
        try:
            validates(schemas["calculate_fare"], broken)
            check("the schema rejects a wrong type", False, "a string workingDays validated")
        except jsonschema.ValidationError:
            check("the schema rejects a wrong type", True)

        r = await client.call_tool("calculate_fare", {})
        check("calculate_fare default start validates", not r.is_error and validates(schemas["calculate_fare"], r.structured_content))

        r = await client.call_tool("calculate_fare", {"startDate": "2027-12-15", "customWorkingDays": 18})
        s = r.structured_content
        check("calculate_fare into 2028 validates", not r.is_error and validates(schemas["calculate_fare"], s))
        check(
            "calculate_fare into 2028 warns",
            len(s["warnings"]) == 1 and "2028" in s["warnings"][0],
            repr(s["warnings"]),
        )

        r = await client.call_tool("get_discount_info", {})
        s = r.structured_content
        check("get_discount_info validates", not r.is_error and validates(schemas["get_discount_info"], s))
        check("get_discount_info tiers", [t["discount"] for t in s["discountTiers"]] == ["0%", "5%", "10%", "15%"])

        r = await client.call_tool("buy_ticket", {})
        check("unknown tool is an error result", r.is_error and text_of(r).startswith("Unknown tool: buy_ticket"), text_of(r))

        r = await client.call_tool("calculate_fare", {"oneWayFare": 0})
        check(
            "bad arguments are an error result",
            r.is_error and text_of(r) == "Invalid input: oneWayFare must be between 1 and 1000 (got 0)",
            text_of(r),
        )
        r = await client.call_tool("calculate_fare", {"startDate": "2027-02-29"})
        check(
            "an impossible date is an error result",
            r.is_error and "not a real calendar date" in text_of(r),
            text_of(r),
        )

    print(f"python mcp {version('mcp')}: {len(passed)} checks passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client.py http://127.0.0.1:PORT/mcp")
    asyncio.run(main(sys.argv[1]))
