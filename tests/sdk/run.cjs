// Drives the real Sitecore Cloud SDK (server side, as its README documents for Node/SSR) against Arbiter.
// Usage: node run.cjs <edgeUrl> <contextId> <friendlyId>; prints one JSON report on stdout.
'use strict';
const { CloudSDK } = require('@sitecore-cloudsdk/core/server');
const { pageView, event, identity } = require('@sitecore-cloudsdk/events/server');
const { personalize } = require('@sitecore-cloudsdk/personalize/server');

const [edgeUrl, contextId, friendlyId] = process.argv.slice(2);

// The SDK accepts Node's http request/response: it reads `headers.cookie` and calls `setHeader`.
function visit(cookie) {
  const request = { headers: { cookie, 'user-agent': 'arbiter-e2e' }, url: '/shop?utm_campaign=spring' };
  const setCookies = [];
  const response = {
    setHeader(name, value) {
      if (name.toLowerCase() === 'set-cookie') setCookies.push(...[].concat(value));
    },
  };
  return { request, response, setCookies };
}

function cookieJar(setCookies) {
  return setCookies.map((c) => c.split(';')[0]).join('; ');
}

async function init(v) {
  await CloudSDK(v.request, v.response, {
    sitecoreEdgeContextId: contextId,
    siteName: 'shop',
    sitecoreEdgeUrl: edgeUrl,
    enableServerCookie: true,
  })
    .addEvents()
    .addPersonalize({ enablePersonalizeCookie: true })
    .initialize();
}

async function main() {
  const base = { channel: 'WEB', currency: 'EUR', language: 'EN' };
  const first = visit('');
  await init(first);
  const jar = cookieJar(first.setCookies);
  const report = { cookies: first.setCookies.map((c) => c.split(';')[0]) };
  report.view = await pageView(first.request, { ...base, page: 'home' });
  report.add = await event(first.request, {
    ...base, page: 'tv', type: 'ADD',
    product: { item_id: 'tv-55', name: 'TV', price: 499, quantity: 1, currency: 'EUR' },
  });
  report.custom = await event(first.request, {
    ...base, page: 'tv', type: 'WISHLIST_ADD', extensionData: { item: 'tv-55', reason: { kind: 'gift' } },
  });
  report.identity = await identity(first.request, {
    ...base, page: 'login', email: 'ada@example.com', firstName: 'Ada',
    identifiers: [{ id: 'ada@example.com', provider: 'email' }],
  });
  // A second page load by the same browser: its cookies come back, no new browser id is minted.
  const second = visit(jar);
  await init(second);
  report.second_cookies = second.setCookies.map((c) => c.split(';')[0]);
  report.personalize = await personalize(second.request, { ...base, friendlyId });
  process.stdout.write(JSON.stringify(report));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
