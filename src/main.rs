//! TPASS month-price MCP server.
fn main() {
    println!("mcp-taipei-metro-month-price");
}
