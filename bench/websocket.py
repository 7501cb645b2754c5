"""The WebSocket benchmark scenario (issue 14), registered in bench/run.py:
100 pairs at 10,000 msg/s with every client on MQTT over WebSocket (one
masked binary frame per packet, as browsers send them), against mqttoolsd's
`protocol = "websockets"` listener and Debian mosquitto's libwebsockets
listener. The same broker over plain TCP is run.py's `pairs` scenario in the
same run; the targets compare against both."""

SCENARIO = ("ws-pairs", ("one-to-one over WebSocket, 100 pairs at 10,000 msg/s",
                         ["--scenario", "pairs", "--pairs", "100", "--rate", "10000", "--websocket", "/mqtt"],
                         ["mqttoolsd", "mosquitto"], "traffic"))

# CPU per message at most 1.15x the same broker over TCP (`pairs`), and below
# Mosquitto's websockets listener.
TARGETS = [
    ("ws-pairs", "cpu_us_per_msg", "scenario:pairs", 1.15),
    ("ws-pairs", "cpu_us_per_msg", "mosquitto", 1.0),
]


def is_websocket(load_args):
    return "--websocket" in load_args


def mqttoolsd_listener(port):
    """TOML for mqttoolsd: the port as a WebSocket listener (not `-p`)."""
    return f"[[listener]]\nport = {port}\nbind = \"127.0.0.1\"\nprotocol = \"websockets\"\n"


def mosquitto_listener(port, spare_port):
    """Mosquitto 2.0.11 (Debian) fails to start a websockets listener given an
    address or a bind_interface, and, on this machine, one that is its only
    listener ("Unable to start any listening sockets"); with a plain loopback
    listener next to it (unused here) it starts and serves the port. The
    generator connects over 127.0.0.1."""
    return f"listener {port}\nprotocol websockets\nlistener {spare_port} 127.0.0.1\n"
