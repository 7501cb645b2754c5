"""A real HTTP auth service with mosquitto-go-auth's contract, on a loopback
port, for the [auth_http] tests and benchmarks: users, superusers and an
ACL rule; params in JSON, form or the query string; answers in any of
go-auth's response modes; every request recorded; a delay to play a
hanging service."""
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AuthService:
    def __init__(self, users=None, superusers=(), acl=None, response_mode="status", delay=0.0, ok_status=200,
                 close_each=False):
        self.users = dict(users or {})
        self.superusers = set(superusers)
        # acl(username, clientid, topic, acc) -> bool
        self.acl = acl or (lambda u, c, t, a: True)
        self.response_mode = response_mode
        self.delay = delay
        self.ok_status = ok_status  # any 2xx allows in go-auth's status mode
        self.close_each = close_each  # "Connection: close" on every answer (no keep-alive)
        self.requests = []  # (path, method, headers dict, params dict)
        self.lock = threading.Lock()
        self.release = threading.Event()  # set: a delayed request answers at once
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                if raw and ctype.startswith("application/json"):
                    params = json.loads(raw)
                elif raw:
                    params = dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
                else:
                    params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                with service.lock:
                    service.requests.append((url.path, self.command, dict(self.headers), params))
                    delay = service.delay
                if delay:
                    service.release.wait(delay)
                ok, error = service.decide(url.path, params)
                service.answer(self, ok, error)

            do_GET = do_POST = do_PUT = handle_any

        class Server(ThreadingHTTPServer):
            # The broker opens up to 64 connections at once: socketserver's
            # backlog of 5 drops SYNs, and a retried SYN waits 1 s, then 3 s.
            request_queue_size = 256

            def handle_error(self, request, client_address):
                pass  # a broker that stops resets its kept-alive connections: not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def decide(self, path, params):
        user = params.get("username")
        if path.endswith("/user"):
            if user in self.users and self.users[user] == params.get("password"):
                return True, ""
            return False, "wrong username or password"
        if path.endswith("/superuser"):
            return user in self.superusers, ""
        if path.endswith("/acl"):
            return bool(self.acl(user, params.get("clientid"), params.get("topic"), int(params.get("acc")))), ""
        return False, "unknown path"

    def answer(self, handler, ok, error):
        mode = self.response_mode
        if mode == "status":
            status, body, ctype = (self.ok_status if ok else 403), b"", "text/plain"
        elif mode == "text":
            status, body, ctype = 200, (b"ok" if ok else b"denied"), "text/plain"
        else:
            status, body, ctype = 200, json.dumps({"ok": ok, "error": error}).encode(), "application/json"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(body)))
            if self.close_each:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the broker gave up waiting

    def taken(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r[0] == path]

    def set_delay(self, delay):
        with self.lock:
            self.delay = delay
        if delay:
            self.release.clear()
        else:
            self.release.set()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def config(self, **extra):
        """An [auth_http] table for this service."""
        keys = {"host": "127.0.0.1", "port": self.port, "getuser_uri": "/auth/user",
                "superuser_uri": "/auth/superuser", "aclcheck_uri": "/auth/acl",
                "response_mode": self.response_mode}
        keys.update(extra)
        lines = ["[auth_http]"]
        headers = keys.pop("headers", None)
        for k, v in keys.items():
            if v is None:
                continue
            lines.append(f"{k} = {json.dumps(v) if isinstance(v, (str, bool)) else v}".replace(": true", "true"))
        text = "\n".join(lines).replace("= true", "= true").replace("= True", "= true") + "\n"
        if headers:
            text += "[auth_http.headers]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in headers.items())
        return text
