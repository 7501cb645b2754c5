"""Helpers for the persistence tests (issue 12): a broker whose state lives
in an SQLite file in the test's folder, restarted on that same file, and
waits that poll with deadlines. No tests live here."""
import pathlib
import subprocess
import time

from mqttwire import Client
from conftest import MQTTOOLSD, SANITIZED, SLOW, Broker, free_port, wait_until  # noqa: F401 (re-exported)



def persistence_config(location, sync="full", extra=""):
    return (f'persistence = true\npersistence_location = "{location}"\n'
            f'persistence_sync = "{sync}"\n{extra}')


class DurableBroker:
    """mqttoolsd on a fixed file; start() again after stop()/crash()."""

    def __init__(self, tmp_path, sync="full", extra="", location=None):
        self.tmp_path = tmp_path
        self.location = pathlib.Path(location or tmp_path)
        self.config = persistence_config(self.location, sync, extra)
        self.db = self.location / "mqttoolsd.db"
        self.broker = None
        self.logs = []

    def start(self):
        self.broker = Broker(self.tmp_path, config=self.config)
        self.logs.append(self.broker.log_path)
        return self.broker

    @property
    def port(self):
        return self.broker.port

    def stop(self):
        code = self.broker.stop()
        assert code == 0, f"exit {code}: " + self.output()
        return code

    def committed(self):
        """Returns once all the broker did before is on disk. A retained QoS 1
        PUBLISH is acknowledged only after its transaction commits, and the one
        store thread commits in order, so its PUBACK (and the second one, which
        clears it again) follows every earlier change. A clean DISCONNECT has
        no acknowledgement of its own: a test that crashes the broker right
        after one calls this first."""
        c = Client(self.port)
        c.connect("")
        assert c.publish("barrier/committed", b"x", qos=1, retain=True).reason < 0x80
        assert c.publish("barrier/committed", b"", qos=1, retain=True, packet_id=2).reason < 0x80
        c.disconnect()

    def crash(self):
        """kill -9: no shutdown code runs."""
        self.broker.proc.kill()
        self.broker.proc.wait()
        self.broker.log.close()

    def output(self):
        if not self.broker.log.closed:
            self.broker.log.flush()
        return self.broker.log_path.read_text(errors="replace")


def run_refused(tmp_path, config, timeout=20):
    """Runs mqttoolsd expecting it to refuse to start: (exit code, output)."""
    conf = tmp_path / "refuse.toml"
    conf.write_text(config)
    port = free_port()
    p = subprocess.run([str(MQTTOOLSD), "-p", str(port), "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")
