/* The protocol between the listener process (HTTP and JSON, no PIN, no module, no ledger) and
 * the signing core (token, policy, SAD, ledger), over a socketpair per listener thread. See
 * docs/protocol.md.
 *
 * A message is a 12-byte header, then the payload: magic (WIRE_MAGIC), type, payload length,
 * each a 32-bit unsigned integer in host byte order (both ends are the same binary on the same
 * host). Payload fields, in order, are fixed-width integers in host byte order and strings or
 * byte strings preceded by their length (u8, u16 or u32 as each message says). Every request
 * but WIRE_REQ_STATUS carries the caller's connection as an SCM_RIGHTS descriptor, from which
 * the core takes the caller's identity itself (wire_peer). Nothing is trusted on either side:
 * every decoder checks lengths, caps, enumerations and that the payload ends where the last
 * field ends, and the core decodes into its own buffers. */
#ifndef IAMSIGN_SIGNER_WIRE_H
#define IAMSIGN_SIGNER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "signer/wire/types.h"

#define WIRE_MAGIC 0x31574149u /* "IAW1" read as a little-endian u32 */
#define WIRE_HDR_LEN 12
#define WIRE_MAX_REQ (16 * 1024)        /* largest request payload */
#define WIRE_MAX_RESP (4 * 1024 * 1024) /* largest response payload */
#define WIRE_MAX_PURPOSE 64
#define WIRE_MAX_IDS 1000 /* credentials/list maxResults cap */
#define WIRE_MAX_CERT (64 * 1024)
#define WIRE_MAX_CHAIN (256 * 1024)
#define WIRE_MAX_SIG (64 * 1024)       /* one signature or CMS ContentInfo */
#define WIRE_MAX_TSA_QUERY 1024        /* one DER TimeStampReq */
#define WIRE_MAX_TSA_WAIT_MS 60000     /* the longest a query may be waited for */
#define WIRE_MAX_TSA_REPLY (12 * 1024) /* one DER TimeStampResp, as the TSA sent it */

/* The CSC method of a request (fixed names for the ledger's op field). */
enum wire_method {
	WM_INFO = 1,
	WM_LIST = 2,
	WM_CRED_INFO = 3,
	WM_SIGN_HASH = 4,
	WM_SIGN_DOC = 5,
	WM_UNKNOWN = 6, /* a path under /csc/v2/ that names no method */
};
/* "info", "credentials/list", "credentials/info", "signatures/signHash", "signatures/signDoc",
 * "unknown"; NULL for a value outside the enumeration. */
const char *wire_method_name(enum wire_method m);
/* The method a path after /csc/v2/ names; WM_UNKNOWN if none. */
enum wire_method wire_method_of(const char *path);

enum wire_type {
	/* listener -> core */
	WIRE_REQ_SIGN = 1,      /* fd; wire_enc_sign */
	WIRE_REQ_CRED_INFO = 2, /* fd; wire_enc_cred_info_req */
	WIRE_REQ_LIST = 3,      /* fd; wire_enc_list_req */
	WIRE_REQ_RECORD = 4,    /* fd; an answer the listener gave alone, for the ledger */
	WIRE_REQ_STATUS = 5,    /* no fd, empty payload: token state for /healthz, /metrics */
	WIRE_REQ_TSA_REPLY =
	    6, /* no fd; only in answer to WIRE_RESP_TSA_QUERY: wire_enc_tsa_reply */
	/* core -> listener: WIRE_RESP_ERROR answers any request; otherwise the matching one */
	WIRE_RESP_ERROR = 64,
	WIRE_RESP_SIGN = 65,
	WIRE_RESP_CRED_INFO = 66,
	WIRE_RESP_LIST = 67,
	WIRE_RESP_RECORD = 68, /* empty payload: recorded */
	WIRE_RESP_STATUS = 69,
	/* core -> listener in the middle of a WIRE_REQ_SIGN for B-T: fetch this time-stamp and
	 * answer WIRE_REQ_TSA_REPLY on the same channel; the sign answer follows after. */
	WIRE_RESP_TSA_QUERY = 70,
};

/* A growing encode buffer. oom is set (and later puts ignored) when an allocation fails, the
 * payload would pass cap, or an encoder refuses its input (a value its decoder would refuse);
 * wire_send refuses a buffer with oom set. Every wire_enc_* returns 0, or -1 with oom set. */
struct wire_buf {
	uint8_t *p;
	size_t len, cap, max;
	int oom;
};
void wire_buf_init(struct wire_buf *b, size_t max); /* max: WIRE_MAX_REQ or WIRE_MAX_RESP */
void wire_buf_free(struct wire_buf *b);             /* wipes, then frees */

/* Framing. wire_send writes the header and payload (one sendmsg for the header with fd
 * attached when fd >= 0, then the rest); 0, or -1 with errno set. wire_recv reads one
 * message: *payload is malloc'ed (NULL when empty; the caller wipes and frees it), *fd the
 * descriptor received with it or -1 (received with MSG_CMSG_CLOEXEC; more than one, or a
 * truncated control message, is an error and all received descriptors are closed). Returns 0,
 * 1 on a clean end of stream before a header, -1 on an I/O or framing error (bad magic, a
 * length over cap, a short read) with why set. EINTR is retried. */
int wire_send(int sock, uint32_t type, const struct wire_buf *payload, int fd);
int wire_recv(int sock, size_t cap, uint32_t *type, uint8_t **payload, size_t *len, int *fd,
              char *why, size_t whylen);

/* The caller behind a connection passed over SCM_RIGHTS: fd must be a connected AF_UNIX
 * SOCK_STREAM socket (not a listening one) whose local address is exactly sock_path, that is
 * a connection accepted on the daemon's own socket; then SO_PEERCRED gives the caller. 0, or
 * -1 with why set. Does not close fd. */
int wire_peer(int fd, const char *sock_path, struct peer *out, char *why, size_t whylen);

/* --- Requests (listener -> core) --- */

/* WIRE_REQ_SIGN payload: u8 method (WM_SIGN_HASH or WM_SIGN_DOC), u8 family, u8 hash, u8
 * pss_salt, u8 cred length + cred, u8 purpose length + purpose (0: absent), u16 SAD length +
 * SAD (0: absent), u8 nhashes, then nhashes digests of the hash's length, then u8 form: 0,
 * or for signDoc the bits WIRE_FORM_B_T and WIRE_FORM_PADES. */
#define WIRE_FORM_B_T 0x01
#define WIRE_FORM_PADES 0x02
struct wire_sign {
	enum wire_method method;
	struct sign_req req; /* req.purpose and req.sad point into the buffers below, or NULL */
	char purpose[WIRE_MAX_PURPOSE + 1];
	char sad[WIRE_MAX_SAD + 1];
};
int wire_enc_sign(struct wire_buf *b, enum wire_method m, const struct sign_req *req);
/* Checks: method; family and hash known; pss_salt <= 64, and equal to the digest length
 * unless the family is RSASSA-PSS; cred a valid credential ID (cred_valid_id); purpose
 * 1..WIRE_MAX_PURPOSE and SAD 1..WIRE_MAX_SAD bytes without NUL; 1..WIRE_MAX_HASHES digests;
 * req.cms set from the method. 0, or -1 with why naming the field. */
int wire_dec_sign(const uint8_t *p, size_t len, struct wire_sign *out, char *why, size_t whylen);

/* WIRE_RESP_TSA_QUERY payload: u32 wait in ms (1..WIRE_MAX_TSA_WAIT_MS: what is left of the
 * request's time-stamp budget), u16 length + DER TimeStampReq (1..WIRE_MAX_TSA_QUERY). The
 * listener posts the bytes unchanged to tsa.url and waits at most the lesser of the wait and
 * tsa.timeout. *q points into p. */
int wire_enc_tsa_query(struct wire_buf *b, unsigned wait_ms, const uint8_t *q, size_t len);
int wire_dec_tsa_query(const uint8_t *p, size_t len, unsigned *wait_ms, const uint8_t **q,
                       size_t *qlen, char *why, size_t whylen);

/* WIRE_REQ_TSA_REPLY payload: u8 outcome (enum wire_tsa_outcome), u16 HTTP status (0: none;
 * else 100..599; 200 with WIRE_TSA_OK), u16 length + the response body (1..WIRE_MAX_TSA_REPLY
 * with WIRE_TSA_OK, else 0). *body points into p. */
enum wire_tsa_outcome {
	WIRE_TSA_OK = 0,             /* HTTP 200, application/timestamp-reply: body follows */
	WIRE_TSA_UNREACHABLE = 1,    /* no connection, or it broke */
	WIRE_TSA_TIMEOUT = 2,        /* no whole answer within tsa.timeout */
	WIRE_TSA_HTTP_ERROR = 3,     /* a status other than 200, or another content type */
	WIRE_TSA_TOO_LARGE = 4,      /* a body over WIRE_MAX_TSA_REPLY */
	WIRE_TSA_NOT_CONFIGURED = 5, /* the listener has no TSA */
};
/* "ok", "unreachable", "timeout", "http_error", "too_large", "not_configured"; NULL outside. */
const char *wire_tsa_outcome_name(int outcome);
struct wire_tsa_reply {
	int outcome;
	unsigned http_status;
	const uint8_t *body;
	size_t len;
};
int wire_enc_tsa_reply(struct wire_buf *b, const struct wire_tsa_reply *r);
int wire_dec_tsa_reply(const uint8_t *p, size_t len, struct wire_tsa_reply *out, char *why,
                       size_t whylen);

/* WIRE_REQ_CRED_INFO payload: u8 cred length + cred. */
int wire_enc_cred_info_req(struct wire_buf *b, const char *cred);
int wire_dec_cred_info_req(const uint8_t *p, size_t len, char cred[CRED_MAX_ID + 1], char *why,
                           size_t whylen);

/* WIRE_REQ_LIST payload: u8 user length + user (0: absent), u8 after length + after (0:
 * absent), u16 max (1..WIRE_MAX_IDS). user must pass cred_valid_user, after cred_valid_id. */
struct wire_list_req {
	int has_user, has_after;
	char user[CRED_MAX_USER + 1];
	char after[CRED_MAX_ID + 1];
	unsigned max;
};
int wire_enc_list_req(struct wire_buf *b, const char *user, const char *after, unsigned max);
int wire_dec_list_req(const uint8_t *p, size_t len, struct wire_list_req *out, char *why,
                      size_t whylen);

/* WIRE_REQ_RECORD payload: u8 method, u16 reason, then for a refusal (reason not R_NONE) u8
 * length + description. R_NONE (allowed, no description) only for WM_INFO; otherwise a known
 * enum reason, and a description of 0..WIRE_MAX_DESC bytes of printable ASCII. */
struct wire_record {
	enum wire_method method;
	struct refusal refusal; /* refusal.reason R_NONE: allowed */
};
/* refusal NULL: allowed (WM_INFO only). */
int wire_enc_record(struct wire_buf *b, enum wire_method m, const struct refusal *refusal);
int wire_dec_record(const uint8_t *p, size_t len, struct wire_record *out, char *why,
                    size_t whylen);

/* --- Responses (core -> listener) --- */

/* WIRE_RESP_ERROR payload: u16 reason (a known enum reason), u8 length + description (the same
 * rules as a record's). Whatever the core answers it has recorded (svc_conclude). */
int wire_enc_error(struct wire_buf *b, const struct refusal *f);
int wire_dec_error(const uint8_t *p, size_t len, struct refusal *f, char *why, size_t whylen);

/* WIRE_RESP_SIGN payload: u8 n (1..WIRE_MAX_HASHES), then n times u32 length (1..WIRE_MAX_SIG)
 * + bytes. Decoded into a sign_result whose signatures are malloc'ed (sign_result_clear). */
int wire_enc_sign_result(struct wire_buf *b, const struct sign_result *r);
int wire_dec_sign_result(const uint8_t *p, size_t len, struct sign_result *out, char *why,
                         size_t whylen);

/* WIRE_RESP_CRED_INFO payload: u8 status (enum wire_cred_status), u8 owner length + owner, u8
 * key type (enum wire_key_type), u16 bits, i32 curve NID (0 for RSA), u32 certificate length
 * + DER (0: none; at most WIRE_MAX_CERT), u32 chain length + PEM (0: none; at most
 * WIRE_MAX_CHAIN, no NUL). */
enum wire_cred_status { WIRE_CRED_ACTIVE = 1, WIRE_CRED_SUSPENDED = 2, WIRE_CRED_REVOKED = 3 };
/* "active", "suspended", "revoked"; NULL outside the enumeration. */
const char *wire_cred_status_name(int status);
enum wire_key_type { WIRE_KEY_EC = 1, WIRE_KEY_RSA = 2 };
struct wire_cred_info {
	int status; /* enum wire_cred_status */
	char owner[CRED_MAX_USER + 1];
	int key_type; /* enum wire_key_type */
	unsigned bits;
	int curve_nid;
	uint8_t *cert_der; /* malloc'ed, or NULL */
	size_t cert_len;
	char *chain_pem; /* malloc'ed and NUL-terminated, or NULL */
};
int wire_enc_cred_info(struct wire_buf *b, const struct wire_cred_info *ci);
int wire_dec_cred_info(const uint8_t *p, size_t len, struct wire_cred_info *out, char *why,
                       size_t whylen);
void wire_cred_info_clear(struct wire_cred_info *ci);

/* WIRE_RESP_LIST payload: u8 more (0 or 1), u16 n (0..WIRE_MAX_IDS), then n times u8 length
 * + credential ID (cred_valid_id). */
struct wire_list {
	int more;
	size_t n;
	char (*ids)[CRED_MAX_ID + 1]; /* malloc'ed array of n */
};
int wire_enc_list(struct wire_buf *b, int more, char *const *ids, size_t n);
int wire_dec_list(const uint8_t *p, size_t len, struct wire_list *out, char *why, size_t whylen);
void wire_list_clear(struct wire_list *l);

/* WIRE_RESP_STATUS payload: u8 state (enum wire_token_state), u8 pcsc, u64 downs, u64
 * recoveries, u64 fast_failures, i64 last_outage_ms; then the ledger's u64 commits, u64
 * records (at least commits), u64 failed, u64 commit_ns, u64 busy_ms, u64 unrecorded, u8
 * stalled (0 or 1). The fields are the token's and the ledger's own figures (tok_stats,
 * ledger_stats), copied by the core. */
enum wire_token_state { WIRE_TOKEN_UP = 0, WIRE_TOKEN_DOWN = 1, WIRE_TOKEN_PIN_FAILED = 2 };
struct wire_token_stats {
	int state; /* enum wire_token_state */
	int pcsc;  /* 1 when a PC/SC thread watches the reader */
	uint64_t downs, recoveries, fast_failures;
	int64_t last_outage_ms;
};
struct wire_ledger_stats {
	uint64_t commits, records, failed, commit_ns, busy_ms, unrecorded;
	int stalled;
};
/* The core's caches: unwrapped keys (pkcs11/wrapped.h) and certificate checks. */
struct wire_cache_stats {
	uint64_t key_hits, key_misses, key_evictions, key_refused, key_proven_again;
	uint64_t key_held, key_capacity;
	uint64_t cert_hits, cert_misses, cert_slots;
};
struct wire_status {
	struct wire_token_stats tok;
	struct wire_ledger_stats ledger;
	struct wire_cache_stats cache;
};
int wire_enc_status(struct wire_buf *b, const struct wire_status *st);
int wire_dec_status(const uint8_t *p, size_t len, struct wire_status *out, char *why,
                    size_t whylen);

#endif
