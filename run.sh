#!/usr/bin/env bash
# weijian's two entry points on a fresh Debian/Ubuntu machine:
#   ./run.sh demo   install what is missing, then run the whole pipeline (weijian demo)
#   ./run.sh test   install what is missing, then lint, type-check and run the test suite
# Both are idempotent: a second run installs nothing and goes straight to the work.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${WEIJIAN_VENV:-.venv}
SYSTEM_PACKAGES=(mosquitto influxdb python3-venv)  # and postgresql for the tests

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
    local missing=()
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing+=(influxdb)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    # The multi-process tests run a private PostgreSQL cluster of their own (initdb, pg_ctl).
    if [ "$1" = test ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        missing+=(postgresql)
    fi
    # A CJK font for the monthly report's PDF (weijian report monthly, also on the demo's data);
    # it also makes Chinese render as text, not boxes, in the app tests' screenshots.
    compgen -G '/usr/share/fonts/opentype/noto/NotoSansCJK*' >/dev/null || missing+=(fonts-noto-cjk)
    # The app's browser tests drive Debian's Chromium with Playwright.
    if [ "$1" = test ]; then
        [ -x /usr/bin/chromium ] || missing+=(chromium)
        [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)  # for WebDriver clients; Playwright needs none
        command -v pdffonts >/dev/null 2>&1 || missing+=(poppler-utils)  # the report tests read the PDF
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "run.sh: installing system packages: ${missing[*]}"
        as_root apt-get update -qq
        # The packages' own services are not wanted: weijian starts its own on free ports.
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_python_env() {
    local stamp="$VENV/.weijian-installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    echo "run.sh: installing weijian and its Python dependencies into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
}

main() {
    local what=${1:-}
    case "$what" in
        demo|test) ;;
        *) echo "usage: ./run.sh demo|test [args...]" >&2; exit 2 ;;
    esac
    shift
    install_system_packages "$what"
    install_python_env
    export PATH="$PWD/$VENV/bin:/usr/sbin:$PATH"
    if [ "$what" = demo ]; then
        exec weijian demo "$@"
    fi
    ruff check .
    mypy weijian firmware_sim gateway ingest alerts dashboards
    if [ $# -gt 0 ]; then exec python -m pytest "$@"; fi
    python -m pytest
    # ingest's PUBLISH fast path reads paho internals; the ingest tests of receiving, outages,
    # poison messages and the acceptance runs also run on paho's own reader, which ingest falls
    # back to when those internals are missing. (The cluster tests and the 100,000-reading run
    # judge and count the same way on either reader and would add four minutes.)
    echo "run.sh: the ingest tests again with [ingest] fast_path = false"
    WEIJIAN_INGEST__FAST_PATH=false exec python -m pytest tests/ingest --ignore=tests/ingest/test_cluster.py \
        --deselect tests/ingest/test_acceptance.py::test_100k_readings_stored_exactly_once
}

main "$@"
