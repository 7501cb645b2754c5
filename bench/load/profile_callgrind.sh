#!/usr/bin/env bash
# User-space instruction profile of a broker under the fixed-rate one-to-one
# scenario: runs BROKER under callgrind, 100 pairs at a rate valgrind can
# follow, zeroes the counters after connection setup and dumps them after the
# measured window, then prints instructions per delivered message and the top
# functions (inclusive and exclusive).
#
#   bench/load/profile_callgrind.sh BUILD BROKER_BINARY [RATE] [SECONDS]
#   e.g. bench/load/profile_callgrind.sh build-release build-release/src/daemon/mqttoolsd
#
# BROKER_BINARY is started as `BINARY -p PORT` on 127.0.0.1 (mqttoolsd and
# bench/load/mqtt_forwarder both take that). Only the processes started here
# are stopped, by PID.
set -euo pipefail

build=${1:?usage: profile_callgrind.sh BUILD BROKER [RATE] [SECONDS]}
broker=${2:?usage: profile_callgrind.sh BUILD BROKER [RATE] [SECONDS]}
rate=${3:-1000}
seconds=${4:-5}
load="$build/bench/load/mqtt_load"
out=$(mktemp -d /tmp/mqttools-callgrind.XXXXXX)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" \
  "$broker" -p "$port" >"$out/broker.log" 2>&1 &
vg=$!
trap 'kill "$vg" 2>/dev/null || true' EXIT

for _ in $(seq 100); do
  if /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

# The generator connects during the warm-up (3 s under valgrind); collection
# is switched on 0.5 s into the steady state and off SECONDS later, well before
# the generator disconnects (teardown is not per-message cost).
"$load" --port "$port" --scenario pairs --pairs 100 --rate "$rate" --warmup 3 \
  --duration "$((seconds + 3))" --drain 3 --connect-timeout 30 >"$out/load.json" &
gen=$!
sleep 3.5
callgrind_control -i on "$vg" >/dev/null 2>&1
callgrind_control -z "$vg" >/dev/null 2>&1
sleep "$seconds"
callgrind_control -i off "$vg" >/dev/null 2>&1
wait "$gen" || true
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 0.5
kill "$vg" 2>/dev/null || true
wait "$vg" 2>/dev/null || true
trap - EXIT

received=$(/usr/bin/python3 -c "import json; print(json.load(open('$out/load.json'))['received'])")
dump=$(ls "$out"/callgrind.out.* 2>/dev/null | head -1)
# Counters were zeroed inside running functions, so PROGRAM TOTALS (and
# inclusive costs) are meaningless: sum the exclusive costs instead.
total=$(callgrind_annotate --auto=no --threshold=100 "$dump" 2>/dev/null | sed -n '/file:function/,$p' |
  awk '$1 ~ /^[0-9,]+$/ {gsub(",", "", $1); s += $1} END {print s + 0}')
echo "generator: $received messages delivered, none lost expected; counted window: ${seconds} s × ${rate} msg/s = $((rate * seconds)) messages"
echo "user-space instructions: $total  →  $((total / (rate * seconds))) per message"
echo
echo "== exclusive instructions by function (per message = Ir / $((rate * seconds)))"
callgrind_annotate --auto=no "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,32p' |
  awk -v n=$((rate * seconds)) '$1 ~ /^[0-9,]+$/ {ir = $1; gsub(",", "", ir); f = $0; sub(/^[^)]*\) +/, "", f);
    printf "%8.1f  %s\n", ir / n, substr(f, 1, 150)}'
echo
echo "(profile: $dump)"
