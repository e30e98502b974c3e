// A real pusher-js 8 or Laravel Echo 2 client, driven by tests/web/test_pusher.py.
//
//   node client.mjs '{"lib": "pusher"|"echo", "key": ..., "host": ..., "port": ...,
//                     "authEndpoint": ..., "apiKey": ...}'
//
// Commands arrive on stdin, one JSON object a line:
//   {"op": "subscribe", "channel": "private-match.x", "events": ["delta"]}
//   {"op": "unsubscribe", "channel": ...}
//   {"op": "trigger", "channel": ..., "event": "client-...", "data": {...}}
//   {"op": "disconnect"}
// Everything the client sees is printed on stdout, one JSON object a line.

import readline from 'node:readline';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';

const opts = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const errorCode = (e) => e?.data?.code ?? e?.error?.data?.code ?? null;

const config = {
  cluster: 'mt1',
  wsHost: opts.host,
  wsPort: opts.port,
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
  authEndpoint: opts.authEndpoint,
  auth: { headers: opts.apiKey ? { 'X-API-Key': opts.apiKey } : {} },
};

if (opts.badAuth) {
  config.channelAuthorization = {
    customHandler: (params, callback) => callback(null, { auth: `${opts.key}:${'0'.repeat(64)}` }),
  };
}

let pusher;
let echo;
if (opts.lib === 'echo') {
  const { auth, ...rest } = config;
  echo = new Echo({
    broadcaster: 'pusher', key: opts.key, Pusher, withoutInterceptors: true,
    ...rest, bearerToken: opts.apiKey,
  });
  pusher = echo.connector.pusher;
} else {
  pusher = new Pusher(opts.key, config);
}

pusher.connection.bind('state_change', (s) => out({ type: 'state', state: s.current }));
pusher.connection.bind('connected', () => out({ type: 'connected', socket_id: pusher.connection.socket_id }));
pusher.connection.bind('error', (e) => out({ type: 'error', code: errorCode(e), error: e?.type ?? null }));

function subscribePusher(name, events) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', (data) => {
    const members = data && data.members ? Object.keys(data.members) : undefined;
    out({ type: 'subscribed', channel: name, members });
  });
  channel.bind('pusher:subscription_error', (e) => out({
    type: 'subscription_error', channel: name, status: e?.status ?? null, error: e?.error ?? e?.type ?? null,
  }));
  channel.bind('pusher:member_added', (m) => out({ type: 'member_added', channel: name, id: m.id, info: m.info }));
  channel.bind('pusher:member_removed', (m) => out({ type: 'member_removed', channel: name, id: m.id }));
  for (const event of events) {
    channel.bind(event, (data, meta) => out({ type: 'event', channel: name, event, data, user_id: meta?.user_id ?? null }));
  }
}

function subscribeEcho(name, events) {
  let channel;
  if (name.startsWith('presence-')) {
    channel = echo.join(name.slice('presence-'.length));
    channel.here((users) => out({ type: 'subscribed', channel: name, members: users.map((u) => u.name) }));
    channel.joining((u) => out({ type: 'member_added', channel: name, info: u }));
    channel.leaving((u) => out({ type: 'member_removed', channel: name, info: u }));
  } else {
    channel = name.startsWith('private-') ? echo.private(name.slice('private-'.length)) : echo.channel(name);
    channel.subscribed(() => out({ type: 'subscribed', channel: name }));
  }
  channel.error((e) => out({
    type: 'subscription_error', channel: name, status: e?.status ?? null, error: e?.error ?? e?.type ?? null,
  }));
  for (const event of events) {
    if (event.startsWith('client-')) {
      channel.listenForWhisper(event.slice('client-'.length), (data) => out({ type: 'event', channel: name, event, data }));
    } else {
      channel.listen('.' + event, (data) => out({ type: 'event', channel: name, event, data }));
    }
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === 'subscribe') {
    (echo ? subscribeEcho : subscribePusher)(cmd.channel, cmd.events ?? []);
  } else if (cmd.op === 'unsubscribe') {
    if (echo) echo.leaveChannel(cmd.channel); else pusher.unsubscribe(cmd.channel);
  } else if (cmd.op === 'trigger') {
    const ok = pusher.channel(cmd.channel).trigger(cmd.event, cmd.data);
    out({ type: 'triggered', ok });
  } else if (cmd.op === 'disconnect') {
    pusher.disconnect();
    setTimeout(() => process.exit(0), 100);
  }
});
rl.on('close', () => { pusher.disconnect(); setTimeout(() => process.exit(0), 100); });
