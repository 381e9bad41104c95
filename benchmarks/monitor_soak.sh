#!/usr/bin/env bash
# A long run of the camera monitor against a real RTSP server and mosquitto, with one camera outage
# halfway: prints the monitor's summary (frames/s, dropped frames, reconnects, resident memory).
#   bash benchmarks/monitor_soak.sh [SECONDS=600] [MODEL=ir_models/mobilenetv2-rgb-int8]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-600}
MODEL=${2:-ir_models/mobilenetv2-rgb-int8}
CLIP=${CLIP:-../shared/data/videos/v_ApplyEyeMakeup_g01_c01.avi}
OUT=${OUT:-build/soak}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RTSP_PORT=$(port); MQTT_PORT=$(port); METRICS_PORT=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\n' "$MQTT_PORT" "$(id -un)" > "$OUT/mosquitto.conf"
start_rtsp() { /usr/bin/python3 tests/servers/rtsp_server.py "$CLIP" "$RTSP_PORT" > "$OUT/rtsp.log" 2>&1 & RTSP_PID=$!; sleep 1; }
mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 & MQTT_PID=$!
start_rtsp
trap 'kill $RTSP_PID $MQTT_PID 2>/dev/null || true' EXIT
rm -rf "$OUT/events.jsonl" "$OUT/clips"
"$PY" examples/rtsp_monitor.py --model "$MODEL" --source "rtsp://127.0.0.1:$RTSP_PORT/stream" \
    --events "$OUT/events.jsonl" --mqtt "mqtt://127.0.0.1:$MQTT_PORT/soak" --metrics-port "$METRICS_PORT" \
    --save-clips "$OUT/clips" --duration "$SECONDS_TOTAL" --status-every 60 --read-timeout 2 2> "$OUT/monitor.log" &
MONITOR_PID=$!
sleep $((SECONDS_TOTAL / 2))
echo "camera outage: killing the RTSP server for 5 s" >&2
kill -9 $RTSP_PID; sleep 5; start_rtsp
wait $MONITOR_PID
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" > /dev/null 2>&1 || true
grep -E "status|reconnected|lost" "$OUT/monitor.log" | tail -20
tail -5 "$OUT/monitor.log"
echo "events: $(grep -c '"event":"end"' "$OUT/events.jsonl" || true) ended; clips: $(ls "$OUT/clips" | wc -l)"
