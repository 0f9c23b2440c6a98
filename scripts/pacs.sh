#!/usr/bin/env bash
# A development PACS: Orthanc with its DICOMweb plugin (Debian: apt-get install orthanc orthanc-dicomweb), run as a
# plain process from configs/pacs/orthanc.json, listening on 127.0.0.1 only, with a user and password, loaded with the
# bundled DICOM samples (samples/dicom).
#   scripts/pacs.sh start    start it (storage and login in $MEDCLF_PACS_DIR, default .pacs/) and load the samples
#   scripts/pacs.sh stop     stop it;   scripts/pacs.sh status   say whether it runs
# Then:  source .pacs/pacs.env   (sets MEDCLF_PACS_USER / MEDCLF_PACS_PASSWORD; the password never goes on a
#        command line) and  medclf predict MODEL --pacs http://127.0.0.1:8042/dicom-web --study UID --store
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(mkdir -p "${MEDCLF_PACS_DIR:-.pacs}" && cd "${MEDCLF_PACS_DIR:-.pacs}" && pwd)"
PORT="${MEDCLF_PACS_PORT:-8042}"
PIDFILE="$DIR/orthanc.pid"
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || {
    echo "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb" >&2; exit 1; }
  [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || {
    echo "The DICOMweb plugin is not installed: apt-get install orthanc-dicomweb" >&2; exit 1; }
  if running; then echo "The PACS already runs (pid $(cat "$PIDFILE"))."; exit 0; fi
  mkdir -p "$DIR/config" "$DIR/db" && chmod 700 "$DIR"
  if [ ! -f "$DIR/pacs.env" ]; then  # one login per folder, kept beside the storage, readable by you only
    umask 077
    pw="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    printf 'export MEDCLF_PACS_USER=%s\nexport MEDCLF_PACS_PASSWORD=%s\n' "${MEDCLF_PACS_USER:-medclf}" \
      "${MEDCLF_PACS_PASSWORD:-$pw}" > "$DIR/pacs.env"
  fi
  # shellcheck disable=SC1091
  . "$DIR/pacs.env"
  cp configs/pacs/orthanc.json "$DIR/config/orthanc.json"
  ( umask 077; printf '{"HttpPort": %s, "StorageDirectory": "%s", "IndexDirectory": "%s", "RegisteredUsers": {"%s": "%s"}}\n' \
      "$PORT" "$DIR/db" "$DIR/db" "$MEDCLF_PACS_USER" "$MEDCLF_PACS_PASSWORD" > "$DIR/config/local.json" )
  "$(command -v Orthanc || echo /usr/sbin/Orthanc)" "$DIR/config" > "$DIR/orthanc.log" 2>&1 &
  echo $! > "$PIDFILE"
  auth="$DIR/config/curl.conf"  # curl reads the login from a file, not from its command line
  ( umask 077; printf 'user = "%s:%s"\n' "$MEDCLF_PACS_USER" "$MEDCLF_PACS_PASSWORD" > "$auth" )
  for _ in $(seq 50); do
    curl -sf -K "$auth" "http://127.0.0.1:$PORT/dicom-web/studies" >/dev/null 2>&1 && break
    running || { echo "Orthanc stopped; see $DIR/orthanc.log" >&2; exit 1; }
    sleep 0.2
  done
  for f in samples/dicom/*.dcm; do
    curl -sf -K "$auth" --data-binary "@$f" "http://127.0.0.1:$PORT/instances" >/dev/null \
      || echo "Could not load $f" >&2
  done
  echo "PACS running: DICOMweb root http://127.0.0.1:$PORT/dicom-web (web interface http://127.0.0.1:$PORT/app/explorer.html)"
  echo "Login: source $DIR/pacs.env   (user $MEDCLF_PACS_USER; the password is in that file)"
}

stop() {
  if running; then kill "$(cat "$PIDFILE")"; rm -f "$PIDFILE"; echo "PACS stopped."; else echo "The PACS is not running."; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"), port $PORT)"; else echo "not running"; fi ;;
  *) echo "usage: scripts/pacs.sh start|stop|status" >&2; exit 2 ;;
esac
