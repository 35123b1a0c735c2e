#!/usr/bin/env bash
# Make sure RabbitMQ (and, with --postgres, PostgreSQL) answers before hookpipe or its tests start.
# Starts a locally installed server that is not running; otherwise says in one line what to do.
set -u

amqp_url=${HOOKPIPE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
hostport=${amqp_url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
amqp_host=${hostport%%:*}; amqp_port=${hostport##*:}
[ "$amqp_port" = "$hostport" ] && amqp_port=5672

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() {  # host port seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do listening "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

if ! listening "$amqp_host" "$amqp_port"; then
  case "$amqp_host" in
    127.*|localhost)
      if command -v rabbitmq-server >/dev/null 2>&1; then
        echo "RabbitMQ is not running on $amqp_host:$amqp_port; starting the local rabbitmq-server..."
        rabbitmq-server -detached >/dev/null 2>&1 || true
        wait_for "$amqp_host" "$amqp_port" 60 || {
          echo "RabbitMQ did not come up within 60 s; see 'rabbitmqctl status' and its log under /var/log/rabbitmq." >&2
          exit 1
        }
        # The port opens before the broker is ready to take connections.
        command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl await_startup >/dev/null 2>&1
      else
        echo "RabbitMQ is not reachable at $amqp_host:$amqp_port and is not installed here: install it ('apt-get install rabbitmq-server') or set HOOKPIPE_AMQP_URL to a running broker." >&2
        exit 1
      fi ;;
    *)
      echo "RabbitMQ is not reachable at $amqp_host:$amqp_port (HOOKPIPE_AMQP_URL); start it there or point HOOKPIPE_AMQP_URL at a running broker." >&2
      exit 1 ;;
  esac
fi

if [ "${1:-}" = "--postgres" ]; then
  # The tests (this mode is theirs) also read the broker's own Prometheus metrics, which the
  # dashboard and alert rules query: enable its plugin on a local broker that lacks it.
  if ! listening "$amqp_host" 15692 && command -v rabbitmq-plugins >/dev/null 2>&1; then
    echo "enabling RabbitMQ's Prometheus plugin (rabbitmq_prometheus, port 15692) for the tests..."
    rabbitmq-plugins enable --quiet rabbitmq_prometheus >/dev/null 2>&1 || true
    wait_for "$amqp_host" 15692 30 || echo "rabbitmq_prometheus did not start: 'rabbitmq-plugins enable rabbitmq_prometheus' by hand; tests/test_dashboards.py needs it." >&2
  fi
  # promtool checks deploy/prometheus. Where it is missing, Debian's package is unpacked into the
  # virtual environment (only the binary: no Prometheus server is installed or started).
  if ! command -v promtool >/dev/null 2>&1 && [ ! -x .venv/bin/promtool ]; then
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
      echo "promtool is missing; unpacking it from Debian's prometheus package into .venv/bin..."
      unpack=$(mktemp -d)
      if (cd "$unpack" && apt-get download prometheus >/dev/null 2>&1 \
          && dpkg-deb -x prometheus_*.deb root && [ -x root/usr/bin/promtool ]); then
        mkdir -p .venv/bin && cp "$unpack/root/usr/bin/promtool" .venv/bin/promtool
      else
        echo "could not fetch Debian's prometheus package: install promtool by hand ('apt-get install prometheus', or a release from prometheus.io/download); tests/test_dashboards.py needs it." >&2
      fi
      rm -rf "$unpack"
    else
      echo "promtool is not installed and this is not Debian: put it on PATH (a release from prometheus.io/download); tests/test_dashboards.py needs it." >&2
    fi
  fi
  pg_host=${HOOKPIPE_TEST_PG_HOST:-127.0.0.1}; pg_port=${HOOKPIPE_TEST_PG_PORT:-5432}
  if ! listening "$pg_host" "$pg_port"; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      echo "PostgreSQL is not running on $pg_host:$pg_port; starting the local cluster..."
      for version in $(ls /etc/postgresql); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
      done
      wait_for "$pg_host" "$pg_port" 30 || {
        echo "PostgreSQL did not come up within 30 s; see 'pg_lsclusters'." >&2
        exit 1
      }
    else
      echo "PostgreSQL is not reachable at $pg_host:$pg_port and is not installed here: the ledger tests need it ('apt-get install postgresql'), or set HOOKPIPE_TEST_PG_HOST/PORT." >&2
      exit 1
    fi
  fi
fi
exit 0
