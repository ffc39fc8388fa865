#!/usr/bin/env bash
# The registry's schema 1 (before wrapped keys) migrates to schema 2 when the daemon opens it:
# a state directory made at schema 1, with a token-key credential enrolled and audit records in
# the ledger, is brought to user_version 2 by the daemon's start; the credential keeps its row
# (key_store token), still signs and verifies, the ledger's chain still verifies, and wrapped
# credentials are then provisioned into the same registry and sign too.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

DB="$WORK/state/iamsign.db"
sq() { sqlite3 "$DB" "$@"; }

KEYGEN_STORE=token provision_cred old-1 ec-p256 citizen-1 seal
openssl x509 -in "$WORK/old-1.pem" -pubkey -noout >"$WORK/old-1.pub"

# Back to schema 1, as iamsign before wrapped keys left it: no wrapped_keys, certs or
# settings tables, no key_store column.
sq "DROP TABLE wrapped_keys; DROP TABLE certs; DROP TABLE settings;
    ALTER TABLE credentials DROP COLUMN key_store; PRAGMA user_version = 1;"
[ "$(sq 'PRAGMA user_version')" = 1 ] && pass "state directory at schema 1" || die "downgrade failed"
want='CREATE TABLE credentials ( id TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, class TEXT NOT NULL CHECK (class IN ('"'citizen', 'seal'"')), status TEXT NOT NULL CHECK (status IN ('"'active', 'suspended', 'revoked'"')), key_uri TEXT NOT NULL, device_key_pem TEXT, created INTEGER NOT NULL)'
[ "$(sq "SELECT sql FROM sqlite_master WHERE name = 'credentials'")" = "$want" ] &&
	pass "credentials table as schema 1 made it" || fail "schema 1 table: $(sq "SELECT sql FROM sqlite_master WHERE name = 'credentials'")"

start_daemon
[ "$(sq 'PRAGMA user_version')" = 2 ] && pass "the daemon's start migrated the registry to schema 2" || fail "user_version $(sq 'PRAGMA user_version')"
[ "$(sq "SELECT key_store FROM credentials WHERE id = 'old-1'")" = token ] && pass "the old credential is a token key" || fail "key_store: $(sq "SELECT key_store FROM credentials WHERE id = 'old-1'")"
printf 'Vehicle licence renewal\n' >"$WORK/form.txt"
D=$(file_digest "$WORK/form.txt")
expect_status "old-1 signs after the migration" 200 "$(sign_hash old-1 "" "$D")"
verify_sig "$WORK/old-1.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "old-1 signature verifies" || fail "old-1 signature"
stop_daemon

# The migrated registry takes wrapped keys.
provision_cred new-1 ec-p256 citizen-2 seal
openssl x509 -in "$WORK/new-1.pem" -pubkey -noout >"$WORK/new-1.pub"
[ "$(sq "SELECT key_store FROM credentials WHERE id = 'new-1'")" = wrapped ] && pass "a wrapped credential enrolled after the migration" || fail "new-1 key_store"
start_daemon
for c in old-1 new-1; do
	expect_status "$c signs" 200 "$(sign_hash "$c" "" "$D")"
	verify_sig "$WORK/$c.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "$c verifies" || fail "$c signature"
done
stop_daemon
admin list >"$WORK/list.txt" 2>&1 || true
grep -Eq '^old-1 .* ec-p256 ' "$WORK/list.txt" && grep -Eq '^new-1 .* ec-p256/wrapped' "$WORK/list.txt" &&
	pass "list shows both" || fail "list: $(cat "$WORK/list.txt")"
check "audit verify: the chain across the migration" admin audit verify
