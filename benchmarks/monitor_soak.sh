#!/usr/bin/env bash
# A long run of the camera monitor from a site file: two cameras on real RTSP servers (one watched
# as two zones, the other as one), mosquitto with Home Assistant discovery, snapshots, clips,
# metrics and the preview, with one camera outage halfway. Prints the monitor's summary (frames/s,
# dropped frames, reconnects, events, resident memory at start and end).
#   bash benchmarks/monitor_soak.sh [SECONDS=600] [MODEL=ir_models/mobilenetv2-rgb-int8]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-600}
MODEL=${2:-ir_models/mobilenetv2-rgb-int8}
VIDEOS=${VIDEOS:-../shared/data/videos}
OUT=${OUT:-build/soak}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DOOR_PORT=$(port); TILL_PORT=$(port); MQTT_PORT=$(port); METRICS_PORT=$(port); PREVIEW_PORT=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\n' "$MQTT_PORT" "$(id -un)" > "$OUT/mosquitto.conf"
rtsp() { /usr/bin/python3 tests/servers/rtsp_server.py "$1" "$2" > "$OUT/rtsp-$2.log" 2>&1 & }
mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 & MQTT_PID=$!
rtsp "$VIDEOS/v_ApplyEyeMakeup_g01_c01.avi" "$DOOR_PORT"; DOOR_PID=$!
rtsp "$VIDEOS/carving_ice.mp4" "$TILL_PORT"; TILL_PID=$!
trap 'kill $DOOR_PID $TILL_PID $MQTT_PID 2>/dev/null || true' EXIT
sleep 2
rm -rf "$OUT/events.jsonl" "$OUT/clips" "$OUT/snapshots"
cat > "$OUT/site.toml" <<SITE
model = "$(pwd)/$MODEL"
events = "events.jsonl"
snapshots = "snapshots"
metrics_port = $METRICS_PORT
preview_port = $PREVIEW_PORT
read_timeout = 2.0
status_every = 60.0
[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT/soak"
ha_discovery = true
[clips]
folder = "clips"
[[camera]]
name = "door"
source = "rtsp://127.0.0.1:$DOOR_PORT/stream"
[[camera.zone]]
name = "left"
box = [0.0, 0.0, 0.5, 1.0]
[[camera.zone]]
name = "right"
box = [0.5, 0.25, 0.5, 0.75]
[[camera]]
name = "till"
source = "rtsp://127.0.0.1:$TILL_PORT/stream"
[[camera.zone]]
name = "counter"
box = [0.1, 0.1, 0.8, 0.8]
SITE
"$PY" examples/rtsp_monitor.py --config "$OUT/site.toml" --duration "$SECONDS_TOTAL" 2> "$OUT/monitor.log" &
MONITOR_PID=$!
sleep $((SECONDS_TOTAL / 2))
echo "camera outage: killing till's RTSP server for 5 s" >&2
kill -9 $TILL_PID; sleep 5; rtsp "$VIDEOS/carving_ice.mp4" "$TILL_PORT"; TILL_PID=$!
wait $MONITOR_PID
grep -E "status|reconnected|lost" "$OUT/monitor.log" | tail -20
tail -6 "$OUT/monitor.log"
echo "events: $(grep -c '"event":"end"' "$OUT/events.jsonl" || true) ended; clips: $(ls "$OUT/clips" | wc -l);" \
     "snapshots: $(ls "$OUT/snapshots" | wc -l)"
