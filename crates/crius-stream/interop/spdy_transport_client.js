// Interop check of crius-stream's SPDY/3.1 against spdy-transport, an independent SPDY/3.1
// implementation (its own framer, zlib dictionary and flow control, which it enforces).
//
//   npm install spdy-transport@3.0.0          (in this directory)
//   cargo run -p crius-stream --example demo_server -- exec 'wc -c; echo e >&2; exit 4' > url &
//   node spdy_transport_client.js "$(head -1 url)"            # 200 kB stdin, all streams
//   cargo run -p crius-stream --example demo_server -- portforward --echo > url &
//   node spdy_transport_client.js "$(head -1 url)" pf "$(sed -n 2p url)"   # 300 kB echo
//
// spdy-transport is an HTTP-over-SPDY client and insists on `:status` in SYN_REPLY; kubelet
// (and so crius) replies with no headers, so that one check is relaxed below.
const net = require('net');
const transport = require('spdy-transport');
const St = require('spdy-transport/lib/spdy-transport/stream').Stream;
St.prototype._handleResponse = function (frame) { this._spdyState.needResponse = false; this.emit('response', 200, frame.headers); };
const url = new URL(process.argv[2]);
const mode = process.argv[3] || 'exec';
const sock = net.connect(Number(url.port), url.hostname);
let head = Buffer.alloc(0);
const proto = mode === 'pf' ? 'portforward.k8s.io' : 'v4.channel.k8s.io';
sock.write(`POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${proto}\r\n\r\n`);
function onData(d) {
  head = Buffer.concat([head, d]);
  const i = head.indexOf('\r\n\r\n');
  if (i < 0) return;
  sock.removeListener('data', onData);
  console.log('HEAD', JSON.stringify(head.slice(0, i).toString()));
  const rest = head.slice(i + 4);
  if (rest.length) sock.unshift(rest);
  start();
}
sock.on('data', onData);
function open(conn, headers) {
  return new Promise((resolve, reject) => {
    conn.request({ method: 'POST', path: '/', host: url.host, headers, readable: true, writable: true }, (err, s) => err ? reject(err) : resolve(s));
  });
}
function collect(s, name, out) {
  return new Promise((resolve) => {
    out[name] = Buffer.alloc(0);
    s.on('data', (d) => { out[name] = Buffer.concat([out[name], d]); });
    s.on('end', () => resolve());
    s.on('error', (e) => { out[name + '_error'] = String(e); resolve(); });
  });
}
async function start() {
  const conn = transport.connection.create(sock, { protocol: 'spdy', isServer: false });
  conn.start(3.1);
  conn.on('error', (e) => console.log('CONN ERROR', String(e)));
  const out = {};
  if (mode === 'pf') {
    const port = process.argv[4];
    const err = await open(conn, { streamtype: 'error', port, requestid: '0' });
    const data = await open(conn, { streamtype: 'data', port, requestid: '0' });
    const p1 = collect(data, 'data', out), p2 = collect(err, 'error', out);
    const big = Buffer.alloc(300000, 'q');
    data.end(big);
    await Promise.all([p1, p2]);
    console.log('ECHO', out.data.length, out.data.equals(big), 'ERR', JSON.stringify(out.error.toString()));
  } else {
    const err = await open(conn, { streamtype: 'error' });
    const stdin = await open(conn, { streamtype: 'stdin' });
    const stdout = await open(conn, { streamtype: 'stdout' });
    const stderr = await open(conn, { streamtype: 'stderr' });
    const ps = [collect(err, 'error', out), collect(stdout, 'stdout', out), collect(stderr, 'stderr', out)];
    stdin.end(Buffer.alloc(200000, 'a'));
    await Promise.all(ps);
    console.log('STDOUT', out.stdout.length, JSON.stringify(out.stdout.slice(0, 40).toString()));
    console.log('STDERR', JSON.stringify(out.stderr.toString()));
    console.log('ERROR', out.error.toString());
  }
  setTimeout(() => process.exit(0), 200);
}
setTimeout(() => { console.log('TIMEOUT'); process.exit(2); }, 20000);
