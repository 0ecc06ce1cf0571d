// Preload for test upstreams: `node -r ./loopback.cjs server.js ...`
//
// Forces every TCP `server.listen(...)` that names no host (or a wildcard host)
// to bind 127.0.0.1 only. @modelcontextprotocol/server-everything calls
// `app.listen(PORT)`, which would otherwise listen on all interfaces.
// Unix-socket / pipe listens and explicit non-wildcard hosts are left alone.
"use strict";

const net = require("node:net");

const LOOPBACK = "127.0.0.1";
const WILDCARDS = new Set(["", "0.0.0.0", "::", "[::]"]);
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  if (typeof value === "number") return true;
  return typeof value === "string" && value.trim() !== "" && /^\d+$/.test(value.trim());
}

net.Server.prototype.listen = function patchedListen(...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    // listen({port, host, ...}) form; leave handles and unix paths alone.
    const isTcp = first.path === undefined && first.handle === undefined && first._handle === undefined && first.fd === undefined;
    if (isTcp && (first.host === undefined || first.host === null || WILDCARDS.has(String(first.host)))) {
      args[0] = { ...first, host: LOOPBACK };
    }
  } else if (isPort(first) || first === undefined || first === null || typeof first === "function") {
    // listen(), listen(cb), listen(port), listen(port, cb), listen(port, backlog, cb), listen(port, host, ...)
    if (first === undefined || first === null || typeof first === "function") {
      args.unshift(0);
    }
    if (typeof args[1] === "string") {
      if (WILDCARDS.has(args[1])) args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return originalListen.apply(this, args);
};
