"""Loopback ports for the brokers tests start. They come from below the
kernel's ephemeral range (ip_local_port_range starts at 32768): a port taken
with bind(0) is an ephemeral port, and between its release and the broker's
bind any client connection's source port could take it (CI saw a broker exit
with "address in use" under ASan). Each port is handed out once per session."""
import os
import socket


class PortPool:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi
        self.given = set()
        self.next = lo + (os.getpid() * 7919) % (hi - lo)

    def free_port(self):
        for _ in range(self.hi - self.lo + 1):
            port = self.next
            self.next = self.lo if port >= self.hi else port + 1
            if port in self.given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self.given.add(port)
            return port
        self.given.clear()  # a very long session: start the cycle again
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
