#!/usr/bin/env bash
# Writes var/dev.env once: random development secrets for every provider, so that `make run`
# accepts signed webhooks and `hookpipe simulate` can sign them. Never used in production.
set -eu
mkdir -p var
[ -f var/dev.env ] && exit 0
rand() { python3 -c "import secrets,sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"; }
svix=$(python3 -c "import base64,secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(24)).decode())")
umask 077
cat > var/dev.env <<ENV
# Development settings written by scripts/dev-env.sh; delete this file to get new secrets.
# A variable already set in the environment wins, e.g. HOOKPIPE_LEDGER_URL=postgresql://... make run
HOOKPIPE_JODO_SECRET=\${HOOKPIPE_JODO_SECRET:-$(rand 16)}
HOOKPIPE_DREAMCLASS_SECRET=\${HOOKPIPE_DREAMCLASS_SECRET:-$(rand 16)}
# DreamClass signs only the event id: Basic auth is what covers the rest (docs/providers.md).
HOOKPIPE_DREAMCLASS_BASIC_AUTH=\${HOOKPIPE_DREAMCLASS_BASIC_AUTH:-dreamclass:$(rand 12)}
HOOKPIPE_RAPYD_ACCESS_KEY=\${HOOKPIPE_RAPYD_ACCESS_KEY:-rak_$(rand 10)}
HOOKPIPE_RAPYD_SECRET_KEY=\${HOOKPIPE_RAPYD_SECRET_KEY:-rsk_$(rand 16)}
HOOKPIPE_RAPYD_WEBHOOK_URL=\${HOOKPIPE_RAPYD_WEBHOOK_URL:-http://127.0.0.1:8080/webhooks/rapyd}
HOOKPIPE_FLEXPRICE_SECRET=\${HOOKPIPE_FLEXPRICE_SECRET:-$svix}
HOOKPIPE_LEDGER_URL=\${HOOKPIPE_LEDGER_URL:-sqlite:///var/ledger.sqlite3}
ENV
echo "wrote var/dev.env with new development secrets"
