#!/usr/bin/env python3
"""The application side of sip-tests/calls-api.sh: a real HTTP server (stdlib only).

    calls_api_app.py webhook --port P --log FILE
        POST /route/<answer>: records the call's attributes (one JSON line in FILE) and
        answers the action named by <answer>: fork (native L16 to the embedded analytics
        service, with custom parameters), reject (486), user (ring account 1002), uri
        (bridge to sip:agent@127.0.0.1:5862), trunk-dial (+15557654321 through "provider"), echo,
        nonsense (not JSON: Siphon must take the fallback route), slow (answers after 10 s,
        past Siphon's timeout: fallback too).
    calls_api_app.py events --port P --log FILE --secret S
        POST /events, /callback: verifies X-Siphon-Signature (t=<unix>,v1=<hex HMAC-SHA256
        of "<t>.<body>">), appends {"path", "sig_ok", "event"} to FILE, answers 204.
    calls_api_app.py check --log FILE [--expect-call ID TYPE,TYPE,...]...
        Every event signed correctly, sequences strictly increasing in arrival order per
        call (the order Siphon emitted them), and each --expect-call's event types, in
        order (other types may interleave).
"""
import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANALYTICS = "ws://127.0.0.1:8851/native"

ANSWERS = {
    "fork": {"action": "fork", "forks": [{
        "url": ANALYTICS, "mode": "native", "encoding": "l16", "sample_rate": 8000,
        "tracks": "inbound", "custom_parameters": {"campaign": "webhook-test"}}],
        "callback_url": "http://127.0.0.1:8853/callback"},
    "reject": {"action": "reject", "code": 486},
    "user": {"action": "user", "user": "1002"},
    "uri": {"action": "uri", "uri": "sip:agent@127.0.0.1:5862"},
    "trunk-dial": {"action": "trunk", "trunk": "provider", "dial": "+15557654321"},
    "echo": {"action": "echo"},
}


def verify(secret, header, body):
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), parts["v1"])


def serve(args):
    lock = threading.Lock()

    def record(line):
        with lock, open(args.log, "a") as f:
            f.write(json.dumps(line) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if args.mode == "events":
                sig = self.headers.get("X-Siphon-Signature", "")
                try:
                    event = json.loads(body)
                except ValueError:
                    event = None
                record({"path": self.path, "sig_ok": verify(args.secret, sig, body),
                        "event": event})
                return self.reply(204)
            answer = self.path.rsplit("/", 1)[-1]
            try:
                attrs = json.loads(body)
            except ValueError:
                attrs = None
            record({"path": self.path, "call": attrs,
                    "sig_ok": verify(args.secret, self.headers.get("X-Siphon-Signature", ""),
                                     body) if args.secret else None})
            if answer == "nonsense":
                return self.reply(200, b"<html>surely not an action</html>")
            if answer == "slow":
                time.sleep(10)
            if answer not in ANSWERS:
                return self.reply(404, b"{}")
            self.reply(200, json.dumps(ANSWERS[answer]).encode())

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def check(args):
    lines = [json.loads(l) for l in open(args.log)]
    bad = [l for l in lines if not l["sig_ok"] or not l["event"]]
    if bad:
        print(f"FAIL: {len(bad)} event(s) unsigned or badly signed: {bad[:2]}")
        return 1
    last = {}
    for l in lines:
        e, dest = l["event"], l["path"]
        key = (dest, e["call_id"])
        if e["sequence"] <= last.get(key, 0):
            print(f"FAIL: out of order for {key}: {e['sequence']} after {last[key]}")
            return 1
        last[key] = e["sequence"]
    for call_id, types in args.expect_call or []:
        got = [l["event"]["type"] for l in lines
               if l["event"]["call_id"] == call_id and l["path"] == "/events"]
        want = types.split(",")
        it = iter(got)
        if not all(t in it for t in want):
            print(f"FAIL: call {call_id}: expected {want} in order, got {got}")
            return 1
        print(f"call {call_id}: {got}")
    print(f"{len(lines)} events, all signed and in order per call")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["webhook", "events", "check"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--log", required=True)
    ap.add_argument("--secret", default="")
    ap.add_argument("--expect-call", nargs=2, action="append", metavar=("CALL_ID", "TYPES"))
    args = ap.parse_args()
    if args.mode == "check":
        return check(args)
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
