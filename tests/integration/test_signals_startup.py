"""SIGTERM at any moment of start-up stops mqttoolsd cleanly (exit 0), never
by the signal's default action: the stop signals are blocked before the
first thread starts (auth workers, the store's thread), so the kernel cannot
hand one to a thread that would die of it; it waits for the signalfd.
(Before main() runs, a signal's default action applies to any program.)
Seen as "broker exited with -15" in cluster test teardowns."""
import random
import signal
import subprocess
import time

from conftest import MQTTOOLSD, free_port

ROUNDS = 24


def test_sigterm_during_startup_stops_cleanly(tmp_path):
    (tmp_path / "passwd").write_text("")  # a password file: the auth workers start
    rng = random.Random(31)
    outcomes = []
    for i in range(ROUNDS):
        state = tmp_path / f"state{i}"
        state.mkdir()
        conf = tmp_path / f"mqttoolsd{i}.toml"
        conf.write_text(f'allow_anonymous = true\npassword_file = "{tmp_path / "passwd"}"\n'
                        f'persistence = true\npersistence_location = "{state}"\n')
        log = open(tmp_path / f"broker{i}.log", "wb")
        proc = subprocess.Popen([str(MQTTOOLSD), "-c", str(conf), "-p", str(free_port())],
                                stdout=log, stderr=subprocess.STDOUT)
        # Once it runs (its first log line), at a random moment of the rest
        # of start-up (loading the store, opening listeners) or after it.
        deadline = time.monotonic() + 20
        while b"starting" not in (tmp_path / f"broker{i}.log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.12))
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
        outcomes.append(code)
    killed = [(i, c) for i, c in enumerate(outcomes) if c != 0]
    assert not killed, f"exit codes other than 0 (round, code): {killed}"
