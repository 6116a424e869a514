// Drives the server with the official MCP TypeScript SDK over streamable HTTP.
//
// Usage: node client.mjs http://127.0.0.1:PORT/mcp
//
// Prints one `ok <check>` line per check and ends with `<N> checks passed`; the first failed check prints
// `FAIL <check>: <why>` and exits 1. tests/sdk_clients.rs runs it against the real binary.

import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';

const url = process.argv[2];
if (!url) {
  console.error('usage: node client.mjs http://127.0.0.1:PORT/mcp');
  process.exit(2);
}

let passed = 0;
function check(name, condition, detail = '') {
  if (!condition) {
    console.log(`FAIL ${name}: ${detail}`);
    process.exit(1);
  }
  passed += 1;
  console.log(`ok ${name}`);
}

const validator = new AjvJsonSchemaValidator();
function validates(schema, value) {
  const result = validator.getValidator(schema)(value);
  return result.valid ? true : result.errorMessage;
}
const textOf = (result) => result.content[0].text;

const client = new Client({ name: 'sdk-client-test', version: '1' });
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);
check('initialize', transport.protocolVersion === '2025-11-25', transport.protocolVersion);
check('server info', client.getServerVersion()?.name === 'mcp-taipei-metro-month-price', JSON.stringify(client.getServerVersion()));

const pong = await client.ping();
check('ping', pong !== undefined && Object.keys(pong).length === 0, JSON.stringify(pong));

const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
check('tools/list', JSON.stringify(names) === '["calculate_fare","get_discount_info"]', JSON.stringify(names));
const schemas = Object.fromEntries(tools.map((t) => [t.name, t.outputSchema]));
for (const [name, schema] of Object.entries(schemas)) {
  check(`output schema ${name}`, schema?.type === 'object', JSON.stringify(schema));
}

// callTool validates structuredContent against the listed output schema itself (it throws otherwise); these
// check it again explicitly.
let r = await client.callTool({ name: 'calculate_fare', arguments: { startDate: '2027-02-01', oneWayFare: 40 } });
let s = r.structuredContent;
check('calculate_fare 2027-02-01 succeeds', !r.isError, textOf(r));
let v = validates(schemas.calculate_fare, s);
check('calculate_fare structured content validates', v === true, v);
check('calculate_fare text equals structured content', JSON.stringify(JSON.parse(textOf(r))) === JSON.stringify(s));
check(
  'calculate_fare 2027-02-01 numbers',
  s.details.workingDays === 16 && s.regularCost === 1160 && s.recommendation === 'USE_REGULAR',
  JSON.stringify(s.details),
);
const broken = structuredClone(s);
broken.details.workingDays = '16';
check('the schema rejects a wrong type', validates(schemas.calculate_fare, broken) !== true);

r = await client.callTool({ name: 'calculate_fare', arguments: {} });
v = validates(schemas.calculate_fare, r.structuredContent);
check('calculate_fare default start validates', !r.isError && v === true, v);

r = await client.callTool({ name: 'calculate_fare', arguments: { startDate: '2027-12-15', customWorkingDays: 18 } });
s = r.structuredContent;
v = validates(schemas.calculate_fare, s);
check('calculate_fare into 2028 validates', !r.isError && v === true, v);
check('calculate_fare into 2028 warns', s.warnings.length === 1 && s.warnings[0].includes('2028'), JSON.stringify(s.warnings));

r = await client.callTool({ name: 'get_discount_info', arguments: {} });
s = r.structuredContent;
v = validates(schemas.get_discount_info, s);
check('get_discount_info validates', !r.isError && v === true, v);
check('get_discount_info tiers', s.discountTiers.map((t) => t.discount).join(' ') === '0% 5% 10% 15%');

r = await client.callTool({ name: 'buy_ticket', arguments: {} });
check('unknown tool is an error result', r.isError === true && textOf(r).startsWith('Unknown tool: buy_ticket'), textOf(r));

r = await client.callTool({ name: 'calculate_fare', arguments: { oneWayFare: 0 } });
check(
  'bad arguments are an error result',
  r.isError === true && textOf(r) === 'Invalid input: oneWayFare must be between 1 and 1000 (got 0)',
  textOf(r),
);
r = await client.callTool({ name: 'calculate_fare', arguments: { startDate: '2027-02-29' } });
check('an impossible date is an error result', r.isError === true && textOf(r).includes('not a real calendar date'), textOf(r));

await client.close();
const sdk = JSON.parse(readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url)));
console.log(`typescript sdk ${sdk.version}: ${passed} checks passed`);
