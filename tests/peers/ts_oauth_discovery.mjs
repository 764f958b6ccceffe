// What the TypeScript SDK's OAuth flow finds out of an MCP server that
// answers 401, before it asks anyone for a token: the challenge's metadata
// URL, the protected-resource metadata there, and the resource it would ask
// tokens for, checked against the URL it connected to. Printed as one JSON
// line; any of the SDK's refusals (a resource that does not match) fails.
//
//   node ts_oauth_discovery.mjs http://127.0.0.1:8080/mcp
import {
  discoverOAuthProtectedResourceMetadata,
  extractResourceMetadataUrl,
  selectResourceURL,
} from '@modelcontextprotocol/sdk/client/auth.js';

const url = process.argv[2];
if (!url) {
  console.error('usage: node ts_oauth_discovery.mjs MCP_URL');
  process.exit(2);
}
const refused = await fetch(url, {
  method: 'POST',
  headers: {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
  },
  body: JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: {
      protocolVersion: '2025-11-25',
      capabilities: {},
      clientInfo: { name: 'oauth-discovery', version: '1' },
    },
  }),
});
if (refused.status !== 401) {
  console.error(`expected 401 from ${url}, got ${refused.status}`);
  process.exit(1);
}
const resourceMetadataUrl = extractResourceMetadataUrl(refused);
const metadata = await discoverOAuthProtectedResourceMetadata(url, { resourceMetadataUrl });
const resource = await selectResourceURL(url, {}, metadata);
console.log(
  JSON.stringify({
    resourceMetadataUrl: String(resourceMetadataUrl),
    resource: String(resource),
    authorizationServers: metadata.authorization_servers,
  }),
);
