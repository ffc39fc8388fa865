#!/usr/bin/env bash
# The audit ledger through iamsign-admin: provisioning and lifecycle actions appear in
# `audit export` with their op names; `audit checkpoint` then `audit verify` passes; tampering
# with the database by sqlite3 (edit, delete, insert, reorder, tail cut past the last checkpoint)
# is named by sequence number, each on a fresh copy of the database.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 (the command-line shell) is required"

DB="$WORK/state/iamsign.db"

# export_ops: the op of every exported record, one per line, in $WORK/ops.txt.
export_all() {
	admin audit export --format jsonl >"$WORK/export.jsonl" || fail "audit export failed"
	jq -r '.op' "$WORK/export.jsonl" >"$WORK/ops.txt" || fail "export is not JSON lines"
}

has_record() { # has_record OP CRED DECISION: a record with that op, credential and decision
	# slurped: jq 1.6's -e looks only at the last input's output
	jq -s -e --arg op "$1" --arg cred "$2" --arg d "$3" \
		'any(.[]; .op == $op and .credential == $cred and .decision == $d)' \
		"$WORK/export.jsonl" >/dev/null
}

# tamper NAME SQL: apply SQL to a consistent copy of the database; the copy's configuration is
# $WORK/NAME/iamsignd.yaml.
tamper() {
	local dir="$WORK/$1"
	mkdir -p "$dir/state"
	chmod 0700 "$dir/state"
	sqlite3 "$DB" ".backup '$dir/state/iamsign.db'" || die "sqlite3 .backup failed"
	sed "s|^state_dir: .*|state_dir: $dir/state|" "$WORK/iamsignd.yaml" >"$dir/iamsignd.yaml"
	chmod 0600 "$dir/iamsignd.yaml"
	sqlite3 "$dir/state/iamsign.db" "$2" || fail "$1: sqlite3 could not apply the change"
}

# verify_names NAME SEQ: audit verify on the copy NAME exits 1 naming sequence number SEQ.
verify_names() {
	local rc=0
	"$ADMIN" -c "$WORK/$1/iamsignd.yaml" audit verify >"$WORK/$1/verify.out" 2>&1 || rc=$?
	if [ "$rc" -eq 1 ] && grep -q "first bad sequence number $2:" "$WORK/$1/verify.out"; then
		pass "$1: audit verify exits 1 naming sequence number $2"
	else
		fail "$1: audit verify exit $rc, expected 1 naming $2: $(cat "$WORK/$1/verify.out")"
	fi
}

# ---- provisioning and lifecycle, each recorded ----
init_token
check "init-token created the audit key" bash -c \
	"pkcs11-tool --module '$SOFTHSM_MODULE' --token-label '$TOKEN_LABEL' --login --pin '$USER_PIN' --list-objects --type privkey | grep -q 'label: *iamsign-audit'"
check_fails "audit-key refused when the key exists" admin audit-key
check "audit-key refusal says it exists" grep -q "already exists" "$WORK/check.out"
check_exit 2 "keygen of the audit key's label refused" admin keygen --credential iamsign-audit --alg ec-p256
provision_cred alice-1 ec-p256 alice
provision_cred seal-1 ec-p256 acme seal
check "suspend" admin suspend --credential alice-1
check "resume" admin resume --credential alice-1
check "revoke" admin revoke --credential alice-1
check_fails "resume after revoke refused" admin resume --credential alice-1
check "destroy" admin destroy --credential alice-1
check_fails "suspend of an unknown credential refused" admin suspend --credential nobody

export_all
for op in admin.init-token admin.keygen admin.csr admin.import-cert admin.enrol admin.suspend \
	admin.resume admin.revoke admin.destroy admin.audit-key; do
	check "export has $op" grep -qx "$op" "$WORK/ops.txt"
done
check "keygen alice-1 recorded" has_record admin.keygen alice-1 allow
check "enrol of seal-1 names the owner" jq -s -e \
	'any(.[]; .op == "admin.enrol" and .credential == "seal-1" and .owner == "acme")' \
	"$WORK/export.jsonl"
check "suspend alice-1 recorded" has_record admin.suspend alice-1 allow
check "resume alice-1 recorded" has_record admin.resume alice-1 allow
check "refused resume recorded as deny" jq -s -e \
	'any(.[]; .op == "admin.resume" and .decision == "deny" and .reason == "credential_revoked")' \
	"$WORK/export.jsonl"
check "revoke alice-1 recorded" has_record admin.revoke alice-1 allow
check "destroy alice-1 recorded" has_record admin.destroy alice-1 allow
check "refused audit-key recorded as deny" has_record admin.audit-key "" deny
check "refused suspend of an unknown credential recorded" has_record admin.suspend nobody deny
check "caller is admin with our uid" jq -s -e --argjson uid "$(id -u)" \
	'all(.[]; .caller == "admin" and .uid == $uid)' "$WORK/export.jsonl"
check "sequence numbers run 1..n" bash -c \
	"jq -s -e '[.[].seq] == [range(1; length + 1)]' '$WORK/export.jsonl' >/dev/null"
check "records are chained in the export" bash -c \
	"jq -s -e '. as \$r | [range(1; length) | \$r[.].prev_hash == \$r[. - 1].hash] | all' '$WORK/export.jsonl' >/dev/null"
check "every export field present, no other" jq -s -e \
	'all(.[]; (keys | sort) == (["seq", "time", "caller", "uid", "gid", "pid", "op",
		"credential", "owner", "purpose", "hash_algorithm", "hashes", "jti", "decision",
		"reason", "detail", "signature_sha256", "prev_hash", "hash"] | sort))' \
	"$WORK/export.jsonl"
check "no PIN in any record" bash -c \
	"! jq -r '.detail' '$WORK/export.jsonl' | grep -qE '$USER_PIN|$SO_PIN'"
check "time is RFC 3339 UTC with milliseconds" jq -s -e \
	'all(.[]; .time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$"))' \
	"$WORK/export.jsonl"

# ---- checkpoint and verify ----
check "audit verify before any checkpoint" admin audit verify
check "uncovered records reported" grep -q "not yet covered" "$WORK/check.out"
check "audit checkpoint" admin audit checkpoint
LAST="$(sqlite3 "$DB" 'SELECT max(seq) FROM audit')"
check "checkpoint covers the head, its own record included" bash -c \
	"[ \"\$(sqlite3 '$DB' 'SELECT max(seq) FROM checkpoints')\" = '$LAST' ]"
check "audit verify" admin audit verify
cp "$WORK/check.out" "$WORK/verify.out"
check "verify says intact" grep -q "intact" "$WORK/verify.out"
check "verify counts the records and the checkpoint" \
	grep -q "^audit ledger: $LAST records, 1 checkpoints: intact" "$WORK/verify.out"
export_all
check "checkpoint recorded" has_record admin.audit.checkpoint "" allow
# Two more records after the checkpoint: not covered, still intact.
check "suspend seal-1" admin suspend --credential seal-1
check "resume seal-1" admin resume --credential seal-1
check "audit verify with records after the checkpoint" admin audit verify
check "records after the checkpoint reported as not yet covered" grep -q "2 record(s) after" "$WORK/check.out"

# ---- tampering, each on a fresh copy ----
tamper edit "UPDATE audit SET decision = 'deny' WHERE seq = 3"
verify_names edit 3
tamper edit-detail2 "UPDATE audit SET detail = 'alg=ec-p384' WHERE seq = 2"
verify_names edit-detail2 2
tamper delete "DELETE FROM audit WHERE seq = 5"
verify_names delete 5
tamper insert "UPDATE audit SET seq = seq + 1000 WHERE seq > 6;
	UPDATE audit SET seq = seq - 999 WHERE seq > 1000;
	INSERT INTO audit SELECT 7, time_ms, caller, uid, gid, pid, op, cred, owner, purpose, halg,
		hash_len, hashes, jti, decision, reason, detail, sig_sha256,
		(SELECT hash FROM audit WHERE seq = 6), hash, tst FROM audit WHERE seq = 2"
verify_names insert 7
tamper append "INSERT INTO audit SELECT (SELECT max(seq) + 1 FROM audit), time_ms, caller, uid, gid, pid, op, cred,
	owner, purpose, halg, hash_len, hashes, jti, decision, reason, detail, sig_sha256, prev_hash,
	hash, tst FROM audit WHERE seq = 4"
verify_names append $((LAST + 3))
tamper reorder "UPDATE audit SET seq = 100000 WHERE seq = 8;
	UPDATE audit SET seq = 8 WHERE seq = 9;
	UPDATE audit SET seq = 9 WHERE seq = 100000"
verify_names reorder 8
tamper truncate "DELETE FROM audit WHERE seq > $((LAST - 3))"
verify_names truncate $((LAST - 2))
check "truncation is named as such" grep -q "tail truncated" "$WORK/truncate/verify.out"
tamper forged-checkpoint "UPDATE checkpoints SET sig = X'3006020101020101'"
verify_names forged-checkpoint "$LAST"
check "the original database still verifies" admin audit verify
