#!/bin/bash
#
# Run mod_wsgi's own integration suite (scripts/run-tests.sh + tests/)
# against either the reference C mod_wsgi or our Rust module.
#
# Usage (as root):
#   bench/conformance/run-mod-wsgi-suite.sh c
#   bench/conformance/run-mod-wsgi-suite.sh ours [PATH/TO/libmod_wsgi.so] [-- TEST...]
#   e.g. ... ours -- tests/wsgi/input tests/wsgi/headers
#
# Environment:
#   MOD_WSGI_SRC    mod_wsgi source checkout, only read   (default /work/ref/mod_wsgi)
#   RWSGI_VENV      venv with mod-wsgi (mod_wsgi-express)  (default /work/main/.venv)
#   SUITE_TIMEOUT   seconds before the suite is killed     (default 1200)
#   KEEP_WORKDIR=1  keep the temp work dir afterwards
#   CONFIG_WORKAROUNDS=1  DIAGNOSTIC ONLY, not a conformance score: edit the
#                   generated httpd.conf to step around two config-parsing
#                   gaps so later tests can run at all: (1) quoted option
#                   values `name='value'` become `name=value` (C mod_wsgi
#                   strips quotes from the value; Apache only from a whole
#                   word); (2) a no-op `WSGIPassAuthorization On` (the value
#                   set globally) goes into each <VirtualHost>, so each vhost
#                   gets its own module server config instead of sharing the
#                   main server's (Apache shares it when a vhost has none of
#                   the module's directives). Outputs are tagged <mode>-workarounds.
#   KEEP_GOING=1    DIAGNOSTIC ONLY: run the suite copy with `set +e` instead of
#                   `set -e`, so a curl error (e.g. exit 18 on a truncated
#                   chunked response) inside a helper does not abort the
#                   remaining tests. Outputs are tagged <mode>[-workarounds]-keepgoing.
#
# What it does: copies MOD_WSGI_SRC into a fresh temp dir; creates a
# .venv/bin/mod_wsgi-express there that wraps $RWSGI_VENV's one, adding
# `--user www-data --group www-data --locale C.UTF-8` to setup-server and,
# for `ours`, pointing the generated httpd.conf's `LoadModule wsgi_module`
# at a private copy of our .so (taken at start, since target/ may be
# rebuilt meanwhile). The wrapper also hard-links $SERVER_ROOT/error_log
# to the work dir so it survives the suite's `rm -rf $SERVER_ROOT`; it is
# copied to bench/conformance/last-<mode>-error_log.txt at the end (with
# the suite output and generated httpd.conf as last-<mode>-*.txt/.conf).
# Prints the suite's "Results: N passed, M failed" line; exit status is
# the suite's. Nothing from the mod_wsgi repo is written outside the
# temp dir.

set -u

usage() { sed -n '3,9p' "$0" >&2; exit 2; }

MODE="${1:-}"; shift || true
case "$MODE" in c|ours) ;; *) usage ;; esac

SO_ARG=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then SO_ARG="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
TEST_ARGS=("$@")

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="${MOD_WSGI_SRC:-/work/ref/mod_wsgi}"
VENV="${RWSGI_VENV:-/work/main/.venv}"
TIMEOUT="${SUITE_TIMEOUT:-1200}"
RUN_USER=www-data
RUN_GROUP=www-data
PORTS=(9876 9877)   # fixed in scripts/run-tests.sh

[ "$(id -u)" = 0 ] || { echo "must run as root (suite drops to $RUN_USER)" >&2; exit 2; }
[ -x "$SRC/scripts/run-tests.sh" ] || { echo "no suite at $SRC" >&2; exit 2; }
[ -x "$VENV/bin/mod_wsgi-express" ] || { echo "no mod_wsgi-express in $VENV" >&2; exit 2; }
for t in apache2 curl openssl lsof; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || {
        echo "missing $t (apt-get install -y apache2 apache2-dev curl openssl lsof)" >&2; exit 2; }
done

# The suite kill -9s whatever holds its ports; refuse rather than hit
# an unrelated process.
for p in "${PORTS[@]}"; do
    if lsof -i :"$p" -t >/dev/null 2>&1; then
        echo "port $p is in use (pids: $(lsof -i :"$p" -t | tr '\n' ' ')); not starting" >&2
        exit 2
    fi
done

WORK="$(mktemp -d /tmp/rwsgi-modwsgi-suite.XXXXXX)"
chmod 755 "$WORK"
TREE="$WORK/mod_wsgi"
SERVER_ROOT="$TREE/httpd-tests"      # fixed in scripts/run-tests.sh
SAVED_LOG="$WORK/error_log.saved"

# Kill only apache processes started from this run's server root
# (plus their children, e.g. daemon processes renamed to "(wsgi:...)").
kill_suite_apache() {
    local pids kids pid
    pids=$(ps -eo pid=,args= | awk -v sr="$SERVER_ROOT/" 'index($0, sr) && /apache2|httpd/ {print $1}')
    [ -n "$pids" ] || return 0
    kids=""
    for pid in $pids; do kids="$kids $(ps -o pid= --ppid "$pid" 2>/dev/null)"; done
    for pid in $pids $kids; do kill -9 "$pid" 2>/dev/null || true; done
}

cleanup() {
    kill_suite_apache
    if [ -f "$SAVED_LOG" ]; then
        cp "$SAVED_LOG" "$HERE/last-$TAG-error_log.txt"
        echo "error_log saved to $HERE/last-$TAG-error_log.txt"
    fi
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
TAG="$MODE"; [ "${CONFIG_WORKAROUNDS:-0}" = 1 ] && TAG="$TAG-workarounds"
[ "${KEEP_GOING:-0}" = 1 ] && TAG="$TAG-keepgoing"
trap cleanup EXIT
trap 'exit 130' INT TERM

# Module to load.
SO=""
if [ "$MODE" = ours ]; then
    SRC_SO="${SO_ARG:-/work/main/target/release/libmod_wsgi.so}"
    [ -f "$SRC_SO" ] || { echo "no module at $SRC_SO" >&2; exit 2; }
    SO="$WORK/libmod_wsgi.so"
    cp "$SRC_SO" "$SO"
    chmod 755 "$SO"
    echo "module: $SRC_SO (sha256 $(sha256sum "$SO" | cut -c1-16)) copied to $SO"
elif [ -n "$SO_ARG" ]; then
    echo "a module path only applies to 'ours'" >&2; exit 2
fi

# Fresh copy of the suite (without any stale venv / server root).
mkdir "$TREE"
tar -C "$SRC" --exclude=./.venv --exclude=./httpd-tests --exclude=./.git -cf - . | tar -C "$TREE" -xf -
mkdir -p "$TREE/.venv/bin"
if [ "${KEEP_GOING:-0}" = 1 ]; then
    sed -i 's/^set -e$/set +e/' "$TREE/scripts/run-tests.sh"
    grep -q '^set +e$' "$TREE/scripts/run-tests.sh" || { echo "KEEP_GOING: no 'set -e' line found" >&2; exit 2; }
fi

# Generic mod_wsgi-express wrapper.
cat > "$TREE/.venv/bin/mod_wsgi-express" <<EOF
#!/bin/bash
# Generated by run-mod-wsgi-suite.sh: wraps $VENV/bin/mod_wsgi-express.
REAL='$VENV/bin/mod_wsgi-express'
MODULE='$SO'
SAVED_LOG='$SAVED_LOG'
WORKAROUNDS='${CONFIG_WORKAROUNDS:-0}'
if [ "\${1:-}" != setup-server ]; then exec "\$REAL" "\$@"; fi
"\$REAL" "\$@" --user $RUN_USER --group $RUN_GROUP --locale C.UTF-8 || exit \$?
root=""; prev=""
for a in "\$@"; do
    case "\$a" in --server-root=*) root="\${a#--server-root=}" ;; esac
    [ "\$prev" = --server-root ] && root="\$a"
    prev="\$a"
done
[ -n "\$root" ] || { echo "wrapper: no --server-root given" >&2; exit 1; }
if [ -n "\$MODULE" ]; then
    sed -i -E "s|^([[:space:]]*LoadModule[[:space:]]+wsgi_module[[:space:]]+).*|\\1'\$MODULE'|" "\$root/httpd.conf"
    grep -q "^[[:space:]]*LoadModule[[:space:]]*wsgi_module[[:space:]]*'\$MODULE'" "\$root/httpd.conf" \\
        || { echo "wrapper: failed to rewrite LoadModule" >&2; exit 1; }
fi
if [ "\$WORKAROUNDS" = 1 ]; then
    sed -i -E -e "s/([[:space:]][A-Za-z-]+=)'([^' ]*)'/\\1\\2/g" \\
        -e 's/^([[:space:]]*<VirtualHost[[:space:]].*>)[[:space:]]*\$/\\1\\nWSGIPassAuthorization On/' "\$root/httpd.conf"
fi
# Pre-create error_log (httpd appends) and hard-link it so the log
# outlives the suite's rm -rf of the server root.
touch "\$root/error_log"
ln -f "\$root/error_log" "\$SAVED_LOG"
cp "\$root/httpd.conf" "\$SAVED_LOG.httpd.conf" 2>/dev/null || true
EOF
chmod 755 "$TREE/.venv/bin/mod_wsgi-express"

# www-data must traverse/read the tree (scripts, tests, module).
chmod -R a+rX "$WORK"

echo "mode: $MODE  tree: $TREE"
cd "$TREE"
LOG="$WORK/suite-output.txt"
timeout --signal=TERM --kill-after=30 "$TIMEOUT" \
    ./scripts/run-tests.sh "${TEST_ARGS[@]}" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
[ $rc -eq 124 ] && echo "SUITE TIMED OUT after ${TIMEOUT}s"
cp "$LOG" "$HERE/last-$TAG-output.txt"
[ -f "$SAVED_LOG.httpd.conf" ] && cp "$SAVED_LOG.httpd.conf" "$HERE/last-$TAG-httpd.conf"

echo
[ "${CONFIG_WORKAROUNDS:-0}" = 1 ] && echo "NOTE: CONFIG_WORKAROUNDS=1 diagnostic run (generated httpd.conf edited; not a conformance score)"
[ "${KEEP_GOING:-0}" = 1 ] && echo "NOTE: KEEP_GOING=1 diagnostic run (suite ran with set +e; not a conformance score)"
echo "[$MODE] $(grep -E '^Results: [0-9]+ passed, [0-9]+ failed' "$LOG" || echo 'Results: (no summary line; suite aborted)')"
exit $rc
